"""rdkit-ae: a plugin-based rate-distortion toolkit for learned image compression."""
__version__ = "0.1.0"

"""Built-in plugins of rdkit-ae, one module per kind (shipped as ``rdkit_ae.plugins``)."""

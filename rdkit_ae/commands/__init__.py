"""CLI commands, one module per area; each adds commands to ``rdkit_ae.commands.app.app``."""

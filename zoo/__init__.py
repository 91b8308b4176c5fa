"""Named recipes (TOML files) shipped with rdkit-ae."""

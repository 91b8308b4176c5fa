from rdkit_ae.cli import run

run()

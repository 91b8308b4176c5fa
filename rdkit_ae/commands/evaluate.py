"""CLI commands (filled in by the corresponding feature)."""

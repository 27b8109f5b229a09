"""Small helpers shared across the package (no third-party imports)."""

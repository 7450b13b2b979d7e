"""Example controllers shipped with the core (BUS.md 8)."""

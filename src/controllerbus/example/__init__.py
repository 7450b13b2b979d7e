"""Example controllers shipped with the core (docs/bus.md#examples)."""

"""controllerbus.cli."""

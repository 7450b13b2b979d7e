"""controllerbus."""

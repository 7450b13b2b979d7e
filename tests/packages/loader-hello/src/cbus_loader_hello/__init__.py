"""A tiny controllerbus plugin for the loader tests."""

"""Tests of the module compiler (controllerbus.compiler, cbus-compile)."""

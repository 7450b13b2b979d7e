"""Sample plugin for the compiler tests: says hello through a vendored library."""

"""Templates of the module compiler's overlay project (package data, ``string.Template``).

* ``pyproject.toml.tmpl``: the overlay's hatchling project (metadata, entry point).
* ``plugin_module.py.tmpl``: the generated plugin module (``BINARY_ID``,
  ``BINARY_VERSION``, ``BUILD_HASH``, ``binary_factories``, ``PLUGIN``).

Their bytes are inputs of the build hash, so editing one rebuilds every plugin.
See :mod:`controllerbus.compiler.overlay` for the placeholders.
"""

"""A sub-package: its directory gets its own importer-cache entry."""

"""The host contract plugins import: directive and value types the host owns.

A plugin imports these types and never the other way round, so the host can ask a
plugin something without importing plugin code, and ``isinstance`` checks keep
working across reloads. Everything under ``controllerbus.api`` is public API: its
names change only with a major version.
"""

"""The plugin's portion of the namespace package cbusns_shared."""

PART = "hello"

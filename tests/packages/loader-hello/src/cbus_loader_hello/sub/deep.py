"""A module two levels down."""

GREETING = "hello"

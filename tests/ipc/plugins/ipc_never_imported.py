"""Importable, but only test_codec's allow_import=True case may import it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Payload:
    n: int

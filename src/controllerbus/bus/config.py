"""Controller configs: frozen, validated pydantic models with a constant config id.

A config is a de-duplication key on the bus (``LoadControllerWithConfig`` with equal
configs joins one controller), so it must be immutable. Its JSON form follows the
protobuf-JSON habit of the Go original: camelCase keys (``exampleField``), with
snake_case accepted on input too.

``pydantic.BaseModel`` reserves ``validate``, so the cursory semantic check of Go's
``Validate()`` is :meth:`Config.validate_config` here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["Config"]


class Config(BaseModel):
    """Base class of every controller config.

    Subclasses set :attr:`CONFIG_ID` and declare their fields::

        class BoilerplateConfig(Config):
            CONFIG_ID: ClassVar[str] = "controllerbus/example/boilerplate/1"
            example_field: str = ""

            def validate_config(self) -> None:
                if not self.example_field:
                    raise ValueError("example field must be set")
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )

    CONFIG_ID: ClassVar[str] = ""

    @classmethod
    def config_id(cls) -> str:
        """The constant id of this config type (usually the controller id)."""
        return cls.CONFIG_ID

    def validate_config(self) -> None:
        """Cursory semantic check; raise ``ValueError`` with a readable message."""

    def equals_config(self, other: object) -> bool:
        """Same type and same field values (Go: protobuf deep equality)."""
        return type(self) is type(other) and self == other

    def debug_vals(self) -> dict[str, list[str]]:
        """Key/values shown in debug labels of directives carrying this config."""
        return {}

    def to_json_dict(self) -> dict[str, Any]:
        """The protobuf-JSON-like form: camelCase keys, default values omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

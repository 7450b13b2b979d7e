"""Config sets: files of ``{key: {id, revision, config}}`` and the controller that runs them."""

from controllerbus.configset.applier import ConfigSetApplier, read_config_document
from controllerbus.configset.controller import (
    CONFIGSET_CONTROLLER_ID,
    ApplyConfigSet,
    ConfigSetConfig,
    ConfigSetController,
    ConfigSetState,
    KeyReference,
    new_configset_factory,
)
from controllerbus.configset.model import (
    ConfigSet,
    ConfigSetError,
    ControllerConfig,
    RawControllerConfig,
    config_set_to_json,
    config_set_to_yaml,
    guess_format,
    parse_document,
)
from controllerbus.configset.resolve import (
    lookup_config_constructor,
    resolve_config_set,
    unmarshal_config_set,
)

__all__ = [
    "CONFIGSET_CONTROLLER_ID",
    "ApplyConfigSet",
    "ConfigSet",
    "ConfigSetApplier",
    "ConfigSetConfig",
    "ConfigSetController",
    "ConfigSetError",
    "ConfigSetState",
    "ControllerConfig",
    "KeyReference",
    "RawControllerConfig",
    "config_set_to_json",
    "config_set_to_yaml",
    "guess_format",
    "lookup_config_constructor",
    "new_configset_factory",
    "parse_document",
    "read_config_document",
    "resolve_config_set",
    "unmarshal_config_set",
]

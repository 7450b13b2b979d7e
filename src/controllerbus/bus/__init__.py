"""The controller bus core (asyncio). It knows nothing of plugins, compilers or loaders.

See docs/bus.md for the semantics; :func:`controllerbus.core.new_core_bus` builds a
bus with the loader and a static resolver ready.
"""

from controllerbus.bus.backoff import Backoff, BackoffPolicy
from controllerbus.bus.bus import Bus
from controllerbus.bus.config import Config
from controllerbus.bus.directives import (
    ExecController,
    ExecControllerValue,
    LoadConfigConstructorByID,
    LoadControllerWithConfig,
    LoadFactoryByConfig,
)
from controllerbus.bus.executor import (
    LOADER_CONTROLLER_ID,
    BackoffExhausted,
    ControllerFailed,
    LoaderController,
    wait_exec_controller_running,
)
from controllerbus.bus.factory import ControllerFactory
from controllerbus.bus.helpers import (
    CallbackHandler,
    DirectiveDisposed,
    PassThruHandler,
    exec_collect_values,
    exec_one_off,
)
from controllerbus.bus.instance import Instance, directive_label
from controllerbus.bus.protocols import (
    AttachedValue,
    ConfigConstructor,
    ConstructOpts,
    Controller,
    ControllerInfo,
    Directive,
    DirectiveHandler,
    DirectiveInstance,
    FactoriesChanged,
    Factory,
    FactoryResolver,
    Reference,
    ReferenceHandler,
    Resolver,
    ResolverHandler,
    ValueOptions,
    WatchableFactoryResolver,
)
from controllerbus.bus.resolver import ResolverController, StaticResolver
from controllerbus.bus.tasks import TaskSet, forever

__all__ = [
    "LOADER_CONTROLLER_ID",
    "AttachedValue",
    "Backoff",
    "BackoffExhausted",
    "BackoffPolicy",
    "Bus",
    "CallbackHandler",
    "Config",
    "ConfigConstructor",
    "ConstructOpts",
    "Controller",
    "ControllerFactory",
    "ControllerFailed",
    "ControllerInfo",
    "Directive",
    "DirectiveDisposed",
    "DirectiveHandler",
    "DirectiveInstance",
    "ExecController",
    "ExecControllerValue",
    "FactoriesChanged",
    "Factory",
    "FactoryResolver",
    "Instance",
    "LoadConfigConstructorByID",
    "LoadControllerWithConfig",
    "LoadFactoryByConfig",
    "LoaderController",
    "PassThruHandler",
    "Reference",
    "ReferenceHandler",
    "Resolver",
    "ResolverController",
    "ResolverHandler",
    "StaticResolver",
    "TaskSet",
    "ValueOptions",
    "WatchableFactoryResolver",
    "directive_label",
    "exec_collect_values",
    "exec_one_off",
    "forever",
    "wait_exec_controller_running",
]

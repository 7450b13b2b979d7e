"""The loader controller: constructs and runs controllers for ``ExecController``.

Semantics: docs/bus.md#the-loader-controller.

Go's loader never retries in practice (its resolvers are never restarted for an
unlimited directive), so a failed controller stays dead and is never closed. This
one runs the loop the spec describes: execute; on error publish an error value with
the next retry time, back off, construct again, execute again; give up with
``"backoff timeout exceeded"`` once the policy's max elapsed time would pass; close
every controller it constructed when it exits or the directive goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from controllerbus.bus.backoff import Backoff, BackoffPolicy
from controllerbus.bus.directives import ExecController, ExecControllerValue
from controllerbus.bus.helpers import CallbackHandler, DirectiveDisposed
from controllerbus.bus.protocols import (
    AttachedValue,
    ConstructOpts,
    Controller,
    ControllerInfo,
    Directive,
    DirectiveInstance,
    Reference,
    Resolver,
    ResolverHandler,
)
from controllerbus.errors import BusError

if TYPE_CHECKING:
    from controllerbus.bus.bus import Bus

__all__ = [
    "LOADER_CONTROLLER_ID",
    "BackoffExhausted",
    "ControllerFailed",
    "LoaderController",
    "wait_exec_controller_running",
]

logger = logging.getLogger(__name__)

LOADER_CONTROLLER_ID = "controllerbus/loader/1"


class ControllerFailed(BusError):
    """A controller could not be constructed or exited with an error."""


class BackoffExhausted(ControllerFailed):
    """A failing controller was retried until the backoff's max elapsed time."""


class LoaderController:
    """Resolves every ``ExecController`` directive (id ``controllerbus/loader/1``)."""

    def __init__(self, bus: Bus, *, backoff: BackoffPolicy | None = None) -> None:
        self._bus = bus
        self._policy = backoff or BackoffPolicy()

    def get_controller_info(self) -> ControllerInfo:
        return ControllerInfo(LOADER_CONTROLLER_ID, "0.0.1", "controller loader")

    async def execute(self) -> None:
        return None

    def handle_directive(self, inst: DirectiveInstance) -> Sequence[Resolver]:
        directive = inst.get_directive()
        if isinstance(directive, ExecController):
            return [_ExecResolver(self._bus, directive, self._policy)]
        return []

    def close(self) -> None:
        return None


def _close_quietly(controller: Controller) -> None:
    try:
        controller.close()
    except Exception:
        info = controller.get_controller_info()
        logger.exception("closing controller %s failed", info.id)


class _ExecResolver:
    def __init__(self, bus: Bus, directive: ExecController, policy: BackoffPolicy) -> None:
        self._bus = bus
        self._directive = directive
        self._policy = policy

    async def resolve(self, handler: ResolverHandler) -> None:
        factory, config = self._directive.factory, self._directive.config
        controller_id = factory.controller_id()
        backoff = Backoff(self._policy)
        loop = asyncio.get_running_loop()
        last_err: Exception | None = None
        while True:
            if last_err is not None:
                delay = backoff.next_delay()
                if delay is None:
                    exhausted = BackoffExhausted(f"backoff timeout exceeded: {last_err}")
                    exhausted.__cause__ = last_err
                    logger.error("controller %s: giving up: %s", controller_id, str(exhausted))
                    handler.add_value(ExecControllerValue(error=exhausted))
                    return
                logger.info("controller %s: retrying in %.2fs", controller_id, delay)
                retry_id = handler.add_value(
                    ExecControllerValue(error=last_err, next_retry_timestamp=time.time() + delay)
                )
                try:
                    await asyncio.sleep(delay)
                finally:
                    if retry_id is not None:
                        handler.remove_value(retry_id)
            try:
                opts = ConstructOpts(
                    logger=logging.getLogger(
                        "controllerbus.controller." + controller_id.replace("/", ".")
                    )
                )
                controller = factory.construct(config, opts)
            except Exception as exc:
                logger.error("cannot construct controller %s: %s", controller_id, str(exc))
                err = ControllerFailed(f"construct controller {controller_id}: {exc}")
                err.__cause__ = exc
                handler.add_value(ExecControllerValue(error=err))
                return
            value_id = handler.add_value(ExecControllerValue(controller=controller))
            if value_id is None:
                _close_quietly(controller)
                return
            started = loop.time()
            try:
                await self._bus.execute_controller(controller)
            except Exception as exc:
                handler.remove_value(value_id)
                ran_long = loop.time() - started >= self._policy.max_interval
                if last_err is None or ran_long:
                    # First failure, or after a run long enough to count as a success.
                    backoff.reset()
                last_err = exc
            finally:
                _close_quietly(controller)


async def wait_exec_controller_running(
    bus: Bus, directive: Directive
) -> tuple[Controller, DirectiveInstance, Reference]:
    """Add ``directive`` (usually ``LoadControllerWithConfig``) and wait for its controller.

    Raises:
        ControllerFailed: an error value arrived first (the reference is released).
        DirectiveDisposed: the instance went away first.
    """
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Controller] = loop.create_future()

    def added(_inst: DirectiveInstance, av: AttachedValue) -> None:
        value = av.value
        if result.done() or not isinstance(value, ExecControllerValue):
            return
        if value.error is not None:
            err = ControllerFailed(str(value.error))
            err.__cause__ = value.error
            result.set_exception(err)
        elif value.controller is not None:
            result.set_result(value.controller)

    def disposed(inst: DirectiveInstance) -> None:
        if not result.done():
            name = inst.get_directive().get_name()
            result.set_exception(DirectiveDisposed(f"{name} was disposed before a controller ran"))

    inst, ref = bus.add_directive(directive, CallbackHandler(added, None, disposed))
    try:
        controller = await result
    except BaseException:
        ref.release()
        raise
    return controller, inst, ref

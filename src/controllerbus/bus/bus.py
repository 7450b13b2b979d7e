"""The bus: directive de-duplication, handlers and controllers.

Semantics: docs/bus.md#de-duplication, docs/bus.md#controllers-on-the-bus.

Usage::

    async with Bus() as bus:
        bus.run_controller(my_controller)          # owned by the bus
        inst, ref = bus.add_directive(MyDirective())
        ...
    # leaving the block cancels every controller and resolver task and waits for them

Everything but :meth:`Bus.execute_controller` and :meth:`Bus.aclose` is synchronous
and must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from controllerbus.bus.instance import Instance, directive_label
from controllerbus.bus.protocols import (
    Controller,
    Directive,
    DirectiveHandler,
    Reference,
    ReferenceHandler,
)
from controllerbus.bus.tasks import TaskSet, forever
from controllerbus.errors import BusError, DirectiveError

__all__ = ["Bus"]

logger = logging.getLogger(__name__)


class Bus:
    """An in-memory controller bus."""

    def __init__(self) -> None:
        self._instances: list[Instance] = []
        self._handlers: list[DirectiveHandler] = []
        self._controllers: list[Controller] = []
        self._tasks = TaskSet("bus")
        self._executing: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- directives ------------------------------------------------------------------------

    def add_directive(
        self, directive: Directive, handler: ReferenceHandler | None = None
    ) -> tuple[Instance, Reference]:
        """Add ``directive`` or join an equivalent one; return the instance and a strong ref.

        Raises:
            DirectiveError: the directive failed ``validate()``.
            BusError: the bus is closed.
        """
        if self._closed:
            raise BusError(f"bus is closed; cannot add {directive_label(directive)}")
        try:
            directive.validate()
        except Exception as exc:
            raise DirectiveError(f"invalid directive {directive.get_name()}: {exc}") from exc
        for old in list(self._instances):
            old_dir = old.get_directive()
            if not directive.is_equivalent(old_dir):
                continue
            if directive.superceeds(old_dir):
                logger.debug("%s supersedes %s", directive_label(directive), old.label)
                old.close()
                break
            ref = old.add_reference(handler)
            if ref is None:
                continue
            return old, ref
        inst = Instance(directive, spawn=self._spawn_resolver, on_disposed=self._forget)
        self._instances.append(inst)
        ref = inst.add_reference(handler)
        assert ref is not None  # a fresh instance is never released
        for candidate in list(self._handlers):
            self._offer(candidate, inst)
        return inst, ref

    def get_directives(self) -> list[Instance]:
        """Every live directive instance, oldest first."""
        return list(self._instances)

    # -- handlers and controllers ------------------------------------------------------------

    def add_handler(self, handler: DirectiveHandler) -> None:
        """Register ``handler`` and offer it every existing directive."""
        self._handlers.append(handler)
        for inst in list(self._instances):
            self._offer(handler, inst)

    def remove_handler(self, handler: DirectiveHandler) -> list[asyncio.Task[None]]:
        """Unregister ``handler``: cancel its resolvers and remove their values.

        Returns:
            The cancelled resolver tasks (await them to know they have ended).
        """
        if handler in self._handlers:
            self._handlers.remove(handler)
        tasks: list[asyncio.Task[None]] = []
        for inst in list(self._instances):
            tasks.extend(inst.detach_owner(handler))
        return tasks

    def reoffer(
        self, handler: DirectiveHandler, match: Callable[[Instance], bool] | None = None
    ) -> list[asyncio.Task[None]]:
        """Offer live directives to ``handler`` again, replacing its earlier answers.

        For each live instance (those ``match`` accepts, or all): the resolvers
        ``handler`` attached before are cancelled and the values they added removed,
        then ``handler.handle_directive`` is asked again and the new resolvers start
        once the cancelled ones have ended. Other handlers' resolvers and values are
        untouched. A handler whose answers changed (e.g. factories added at runtime)
        calls this; a handler not on the bus is ignored.

        Returns:
            The cancelled resolver tasks (await them to know they have ended).
        """
        if self._closed or handler not in self._handlers:
            return []
        tasks: list[asyncio.Task[None]] = []
        for inst in list(self._instances):
            if inst.released or (match is not None and not match(inst)):
                continue
            try:
                resolvers = list(handler.handle_directive(inst))
            except Exception:
                logger.exception("error handling directive %s", inst.label)
                resolvers = []
            tasks.extend(inst.replace_resolvers(handler, resolvers))
        return tasks

    def get_controllers(self) -> list[Controller]:
        """Controllers attached to the bus, in attach order."""
        return list(self._controllers)

    async def execute_controller(self, controller: Controller) -> None:
        """Attach ``controller`` and run it; it stays attached until cancelled.

        A controller whose ``execute()`` returns normally keeps answering directives
        until this call is cancelled; one that raises is removed and the error
        re-raised. ``close()`` is left to whoever constructed the controller.

        Raises:
            BusError: the bus is closed.
        """
        if self._closed:
            raise BusError("bus is closed; cannot execute a controller")
        info = controller.get_controller_info()
        task = asyncio.current_task()
        if task is not None:
            self._executing.add(task)
        self._controllers.append(controller)
        self.add_handler(controller)
        logger.info(
            "controller started: %s@%s", info.id, info.version, extra={"controller": info.id}
        )
        try:
            await controller.execute()
            logger.debug("controller %s returned; staying attached", info.id)
            await forever()
        except asyncio.CancelledError:
            logger.info("controller stopped: %s", info.id, extra={"controller": info.id})
            raise
        except Exception as exc:
            logger.warning(
                "controller exited with error: %s: %s",
                info.id,
                str(exc),
                extra={"controller": info.id},
            )
            raise
        finally:
            self.remove_controller(controller)
            if task is not None:
                self._executing.discard(task)

    def run_controller(self, controller: Controller) -> asyncio.Task[None]:
        """Execute ``controller`` in a task owned by the bus (cancelled by :meth:`aclose`)."""
        info = controller.get_controller_info()
        return self.spawn(self.execute_controller(controller), name=f"controller {info.id}")

    def remove_controller(self, controller: Controller) -> list[asyncio.Task[None]]:
        """Detach ``controller``: it is offered nothing more and its resolvers stop.

        Returns:
            The cancelled resolver tasks (await them to know they have ended).
        """
        if controller in self._controllers:
            self._controllers.remove(controller)
        return self.remove_handler(controller)

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in a background task owned by the bus.

        Raises:
            BusError: the bus is closed.
        """
        try:
            return self._tasks.spawn(coro, name=name)
        except RuntimeError as exc:
            raise BusError(str(exc)) from exc

    # -- shutdown ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has started."""
        return self._closed

    async def aclose(self) -> None:
        """Cancel every controller and resolver and wait until nothing is left running."""
        if self._closed:
            await self._tasks.aclose()
            return
        self._closed = True
        current = asyncio.current_task()
        executing = [t for t in self._executing if t is not current]
        for task in executing:
            task.cancel()
        for inst in list(self._instances):
            inst.close()
        await self._tasks.aclose()
        if pending := [t for t in executing if not t.done()]:
            await asyncio.wait(pending)
        # Dispose callbacks were scheduled with call_soon; let them run before returning.
        await asyncio.sleep(0)

    # -- internals ---------------------------------------------------------------------------

    def _offer(self, handler: DirectiveHandler, inst: Instance) -> None:
        try:
            resolvers = handler.handle_directive(inst)
        except Exception:
            logger.exception("error handling directive %s", inst.label)
            return
        if resolvers:
            inst.attach_resolvers(handler, resolvers)

    def _spawn_resolver(self, coro: Coroutine[Any, Any, None], label: str) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, name=f"resolver {label}")

    def _forget(self, inst: Instance) -> None:
        if inst in self._instances:
            self._instances.remove(inst)

"""Directive instances: de-duplication, references, values, resolvers, idle.

Semantics: docs/bus.md#instances-and-references.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from controllerbus.bus import (
    Bus,
    ResolverHandler,
    ValueOptions,
    directive_label,
)
from controllerbus.errors import BusError, DirectiveError
from tests.bus.doubles import Answering, Ask, FnResolver, Recorder, adds, settle

ONE_HARD = ValueOptions(max_value_count=1, max_value_hard_cap=True)


async def test_invalid_directive_is_rejected_before_anything(bus: Bus) -> None:
    with pytest.raises(DirectiveError, match="invalid directive Ask: key must be set"):
        bus.add_directive(Ask(""))
    assert bus.get_directives() == []


def test_debug_label_sorts_keys_and_shows_space_as_plus() -> None:
    class Multi(Ask):
        def get_debug_vals(self) -> dict[str, list[str]]:
            return {"z": ["a b+c"], "a": ["1", "2"]}

    assert directive_label(Ask("hello world")) == "Ask<key=hello+world>"
    assert directive_label(Multi("x")) == "Ask<a=1&a=2&z=a+b+c>"


async def test_equivalent_directives_share_one_instance_and_one_resolver_run(bus: Bus) -> None:
    resolver = FnResolver(adds("v", hold=True))
    ctrl = Answering(lambda d: [resolver] if d.key == "same" else [FnResolver(adds("w"))])
    bus.add_handler(ctrl)
    inst1, ref1 = bus.add_directive(Ask("same"))
    inst2, ref2 = bus.add_directive(Ask("same"))
    other, _ = bus.add_directive(Ask("other"))
    await settle()
    assert inst1 is inst2
    assert other is not inst1
    assert ctrl.offered == ["same", "other"]
    assert resolver.runs == 1
    # Two strong refs: releasing one keeps the instance alive.
    ref1.release()
    assert not inst1.released
    ref2.release()
    assert inst1.released


async def test_superseding_directive_closes_the_old_instance(bus: Bus) -> None:
    old, _old_ref = bus.add_directive(Ask("k", version=1))
    rec = Recorder()
    old.add_reference(rec)
    new, _ = bus.add_directive(Ask("k", version=2))
    assert new is not old
    assert old.released
    await settle()
    assert rec.disposed == 1
    assert bus.get_directives() == [new]
    # An equal version joins the newest instance instead.
    joined, _ = bus.add_directive(Ask("k", version=2))
    assert joined is new


async def test_release_of_only_strong_ref_disposes_immediately(bus: Bus) -> None:
    inst, ref = bus.add_directive(Ask("k"))
    rec = Recorder()
    weak = inst.add_reference(rec, weak=True)
    assert weak is not None
    ref.release()
    assert inst.released
    assert inst.add_reference() is None
    await settle()
    assert rec.disposed == 1
    ref.release()  # idempotent
    weak.release()
    await settle()
    assert rec.disposed == 1
    assert bus.get_directives() == []


async def test_unref_dispose_delay_and_readd_cancels_it(bus: Bus) -> None:
    opts = ValueOptions(unref_dispose_dur=0.05)
    inst, ref = bus.add_directive(Ask("k", opts))
    ref.release()
    assert not inst.released
    # Re-adding a reference inside the window cancels the timer.
    again = inst.add_reference()
    assert again is not None
    await asyncio.sleep(0.1)
    assert not inst.released
    again.release()
    await asyncio.sleep(0.02)
    assert not inst.released
    await asyncio.sleep(0.08)
    assert inst.released


async def test_weak_refs_do_not_keep_an_instance_alive(bus: Bus) -> None:
    inst, ref = bus.add_directive(Ask("k"))
    weak = inst.add_reference(weak=True)
    assert weak is not None
    ref.release()
    assert inst.released


async def test_releasing_a_weak_ref_with_no_strong_ref_left_disposes(bus: Bus) -> None:
    opts = ValueOptions(unref_dispose_dur=10)
    inst, ref = bus.add_directive(Ask("k", opts))
    ref.release()  # starts the 10 s timer
    weak = inst.add_reference(weak=True)  # stops the timer (Go does, even for weak refs)
    assert weak is not None
    await asyncio.sleep(0.01)
    assert not inst.released
    weak.release()  # no strong ref remains: unreferenced again, timer restarts
    assert not inst.released
    inst.close()
    assert inst.released


async def test_value_ids_start_at_one_and_are_never_reused(bus: Bus) -> None:
    handles: list[ResolverHandler] = []

    async def capture(handler: ResolverHandler) -> None:
        handles.append(handler)
        await asyncio.Event().wait()

    bus.add_handler(Answering(lambda d: [FnResolver(capture)]))
    inst, _ = bus.add_directive(Ask("k"))
    await settle()
    (h,) = handles
    assert h.add_value("a") == 1
    assert h.add_value("b") == 2
    removed = h.remove_value(1)
    assert removed is not None
    assert removed.value == "a"
    assert h.remove_value(1) is None
    assert h.remove_value(99) is None
    assert h.add_value("c") == 3
    assert [v.value for v in inst.get_values()] == ["b", "c"]


async def test_a_resolver_can_only_remove_its_own_values(bus: Bus) -> None:
    handles: list[ResolverHandler] = []

    async def capture(handler: ResolverHandler) -> None:
        handles.append(handler)
        await asyncio.Event().wait()

    bus.add_handler(Answering(lambda d: [FnResolver(capture), FnResolver(capture)]))
    inst, _ = bus.add_directive(Ask("k"))
    await settle()
    first, second = handles
    vid = first.add_value("mine")
    assert vid is not None
    assert second.remove_value(vid) is None
    assert [v.value for v in inst.get_values()] == ["mine"]


async def test_new_reference_handler_gets_current_values_in_id_order(bus: Bus) -> None:
    bus.add_handler(Answering(lambda d: [FnResolver(adds("a", "b", "c"))]))
    inst, _ = bus.add_directive(Ask("k"))
    await settle()
    rec = Recorder()
    inst.add_reference(rec)
    assert [(v.value_id, v.value) for v in rec.added] == [(1, "a"), (2, "b"), (3, "c")]


async def test_callbacks_may_release_references_reentrantly(bus: Bus) -> None:
    bus.add_handler(Answering(lambda d: [FnResolver(adds("a", "b"))]))
    inst, ref = bus.add_directive(Ask("k"))
    seen: list[object] = []

    class ReleaseOnFirst(Recorder):
        def handle_value_added(self, inst_: object, value: object) -> None:
            seen.append(value)
            ref.release()

    inst.add_reference(ReleaseOnFirst(), weak=True)
    await settle()
    assert inst.released
    assert len(seen) == 1


async def test_hard_cap_rejects_second_value_and_cancels_resolvers(bus: Bus) -> None:
    handles: list[ResolverHandler] = []
    results: list[int | None] = []

    async def add_twice(handler: ResolverHandler) -> None:
        handles.append(handler)
        results.append(handler.add_value("first"))
        results.append(handler.add_value("second"))
        await asyncio.Event().wait()

    waiter = FnResolver(adds(hold=True))
    resolver = FnResolver(add_twice)
    bus.add_handler(Answering(lambda d: [resolver, waiter]))
    inst, _ = bus.add_directive(Ask("k", ONE_HARD))
    await settle()
    assert results == [1, None]
    # Reaching the limit cancels every resolver of the instance.
    # (the waiter may be cancelled before its first step, so count tasks, not bodies)
    assert resolver.cancelled == 1
    assert inst.running_resolvers == 0
    # Removing the value below the limit starts the resolvers again; values kept.
    assert handles[0].remove_value(1) is not None
    await settle()
    assert resolver.runs == 2
    # The second run added "first" again (id 2: a rejected value takes no id).
    assert [(v.value_id, v.value) for v in inst.get_values()] == [(2, "first")]
    assert resolver.cancelled == 2


async def test_soft_cap_accepts_late_values_but_still_cancels(bus: Bus) -> None:
    handles: list[ResolverHandler] = []

    async def capture(handler: ResolverHandler) -> None:
        handles.append(handler)
        handler.add_value("one")
        await asyncio.Event().wait()

    resolver = FnResolver(capture)
    bus.add_handler(Answering(lambda d: [resolver]))
    inst, _ = bus.add_directive(Ask("k", ValueOptions(max_value_count=1)))
    await settle()
    assert resolver.cancelled == 1
    assert handles[0].add_value("late") == 2
    assert [v.value for v in inst.get_values()] == ["one", "late"]


async def test_resolver_error_is_logged_not_restarted_and_values_stay(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail(handler: ResolverHandler) -> None:
        handler.add_value("kept")
        raise RuntimeError("boom")

    resolver = FnResolver(fail)
    bus.add_handler(Answering(lambda d: [resolver]))
    with caplog.at_level(logging.ERROR):
        inst, _ = bus.add_directive(Ask("k", ValueOptions(max_value_count=2)))
        await settle()
    assert "resolver exited with error: Ask<key=k>: boom" in caplog.text
    assert [v.value for v in inst.get_values()] == ["kept"]
    assert resolver.runs == 1


async def test_late_handler_is_offered_existing_directives(bus: Bus) -> None:
    inst, _ = bus.add_directive(Ask("early"))
    ctrl = Answering(lambda d: [FnResolver(adds("answer"))])
    bus.add_handler(ctrl)
    await settle()
    assert ctrl.offered == ["early"]
    assert [v.value for v in inst.get_values()] == ["answer"]


async def test_removing_a_controller_cancels_its_resolvers_and_removes_values(bus: Bus) -> None:
    held = FnResolver(adds("held", hold=True))
    ctrl = Answering(lambda d: [held])
    other = Answering(lambda d: [FnResolver(adds("other"))], name="test/other")
    task = asyncio.create_task(bus.execute_controller(ctrl))
    bus.add_handler(other)
    inst, _ = bus.add_directive(Ask("k"))
    rec = Recorder()
    inst.add_reference(rec)
    await settle()
    assert sorted(rec.values) == ["held", "other"]
    assert bus.get_controllers() == [ctrl]
    bus.remove_controller(ctrl)
    await settle()
    assert held.cancelled == 1
    assert rec.values == ["other"]
    assert [v.value for v in rec.removed] == ["held"]
    # It is not offered new directives any more.
    bus.add_directive(Ask("later"))
    assert ctrl.offered == ["k"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_idle_callback_fires_when_all_resolvers_return(bus: Bus) -> None:
    release = asyncio.Event()

    async def wait_then_add(handler: ResolverHandler) -> None:
        await release.wait()
        handler.add_value("done")

    bus.add_handler(Answering(lambda d: [FnResolver(wait_then_add), FnResolver(adds("x"))]))
    inst, _ = bus.add_directive(Ask("k"))
    fired: list[int] = []
    inst.add_idle_callback(lambda: fired.append(len(inst.get_values())))
    await settle()
    assert fired == []
    release.set()
    await settle()
    assert fired == [2]
    # Already idle: called at once; exactly once.
    inst.add_idle_callback(lambda: fired.append(-1))
    assert fired == [2, -1]


async def test_instance_without_resolvers_is_idle_at_once(bus: Bus) -> None:
    inst, _ = bus.add_directive(Ask("nobody"))
    fired: list[bool] = []
    inst.add_idle_callback(lambda: fired.append(True))
    assert fired == [True]


async def test_dispose_callbacks_run_once_and_immediately_when_released(bus: Bus) -> None:
    inst, ref = bus.add_directive(Ask("k"))
    calls: list[str] = []
    inst.add_dispose_callback(lambda: calls.append("a"))
    remove_b = inst.add_dispose_callback(lambda: calls.append("b"))
    remove_b()
    ref.release()
    inst.close()
    await settle()
    assert calls == ["a"]
    inst.add_dispose_callback(lambda: calls.append("late"))
    assert calls == ["a", "late"]


async def test_dispose_drops_values_without_removed_callbacks(bus: Bus) -> None:
    bus.add_handler(Answering(lambda d: [FnResolver(adds("v", hold=True))]))
    inst, ref = bus.add_directive(Ask("k"))
    rec = Recorder()
    inst.add_reference(rec, weak=True)
    await settle()
    assert rec.values == ["v"]
    ref.release()
    await settle()
    assert rec.removed == []
    assert rec.disposed == 1
    assert inst.get_values() == []


async def test_closing_the_bus_cancels_everything(bus: Bus) -> None:
    held = FnResolver(adds(hold=True))
    bus.add_handler(Answering(lambda d: [held]))
    bus.add_directive(Ask("k"))
    ctrl = Answering(lambda d: [])
    bus.run_controller(ctrl)
    await settle()
    await bus.aclose()
    assert held.cancelled == 1
    assert bus.get_controllers() == []
    with pytest.raises(BusError, match="bus is closed"):
        bus.add_directive(Ask("after"))
    # The fixture asserts no task is left running.


def test_bus_imports_nothing_of_loader_or_compiler() -> None:
    import subprocess
    import sys

    code = (
        "import sys, controllerbus.bus, controllerbus.core, controllerbus.configset\n"
        "bad = [m for m in sys.modules if m.startswith(('controllerbus.loader',"
        " 'controllerbus.compiler', 'hatchling', 'installer', 'build', 'virtualenv'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

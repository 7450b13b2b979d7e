"""The framed transport: frames, limits, garbage and back-pressure on a real socketpair."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from controllerbus.ipc.messages import Heartbeat, Ready, ValueAdd, WireObject
from controllerbus.ipc.transport import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    MalformedFrame,
    PeerNotReading,
    open_connection,
    socketpair,
)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Connection, Connection]]:
    a_sock, b_sock = socketpair()
    a = await open_connection(a_sock, name="a", max_frame=4096)
    b = await open_connection(b_sock, name="b", max_frame=4096)
    yield a, b
    await a.aclose()
    await b.aclose()


async def _raw(conn: Connection, data: bytes) -> None:
    conn._writer.write(data)
    await conn._writer.drain()


async def test_messages_round_trip_in_order(pair: tuple[Connection, Connection]) -> None:
    a, b = pair
    await a.send(Heartbeat(seq=1))
    a.send_nowait(Heartbeat(seq=2, ack=True))
    a.send_nowait(Ready(binary_id="x", binary_version="1", factories=[]))
    await a.send(Heartbeat(seq=3))
    got = [await b.recv() for _ in range(4)]
    assert [m.kind for m in got] == ["heartbeat", "heartbeat", "ready", "heartbeat"]
    assert [getattr(m, "seq", None) for m in got] == [1, 2, None, 3]


async def test_oversized_frame_from_peer_closes_with_clear_error(
    pair: tuple[Connection, Connection],
) -> None:
    a, b = pair
    await _raw(a, struct.pack(">I", 1 << 30))
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 4096 bytes"):
        await b.recv()
    assert b.closed
    assert b.close_reason is not None
    assert "1073741824" in b.close_reason


async def test_oversized_message_is_not_sent(pair: tuple[Connection, Connection]) -> None:
    a, b = pair
    big = ValueAdd(id=1, value_id=1, value=WireObject(type="m:T", data="x" * 5000))
    with pytest.raises(FrameTooLarge, match="refusing to send"):
        await a.send(big)
    await a.send(Heartbeat(seq=7))  # the connection is still usable
    msg = await b.recv()
    assert isinstance(msg, Heartbeat)
    assert msg.seq == 7


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not json at all", "malformed message"),
        (b'{"kind": "no-such-kind"}', "malformed message"),
        (b'{"kind": "heartbeat", "seq": "x"}', "seq"),
        (
            b'{"kind": "value-add", "id": 0, "value_id": 1, "value": {"type": "m:T", "data": 1}}',
            "id",
        ),
        (
            b'{"kind": "directive-add", "id": 1, "directive": {"type": "os.system", "data": 1}}',
            "type",
        ),
        (b"\xff\xfe", "malformed message"),
    ],
)
async def test_garbage_is_refused_and_closes(
    pair: tuple[Connection, Connection], payload: bytes, match: str
) -> None:
    a, b = pair
    await _raw(a, struct.pack(">I", len(payload)) + payload)
    with pytest.raises(MalformedFrame, match=match):
        await b.recv()
    assert b.closed


async def test_empty_frame_is_malformed(pair: tuple[Connection, Connection]) -> None:
    a, b = pair
    await _raw(a, struct.pack(">I", 0))
    with pytest.raises(MalformedFrame, match="empty frame"):
        await b.recv()


async def test_truncated_frame_is_connection_closed(pair: tuple[Connection, Connection]) -> None:
    a, b = pair
    await _raw(a, struct.pack(">I", 100) + b"{")
    await a.aclose()
    with pytest.raises(ConnectionClosed, match="after 1 bytes of a frame"):
        await b.recv()


async def test_send_waits_for_a_slow_reader(pair: tuple[Connection, Connection]) -> None:
    """Back-pressure: send() blocks while the peer does not read, resumes when it does."""
    a, b = pair
    msg = ValueAdd(id=1, value_id=1, value=WireObject(type="m:T", data="y" * 3000))
    sent = 0

    async def writer() -> None:
        nonlocal sent
        while True:
            await a.send(msg)
            sent += 1

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.3)
    stalled = sent
    await asyncio.sleep(0.2)
    assert sent == stalled, "send() kept going although nobody reads"
    assert 0 < stalled < 10_000
    for _ in range(stalled):
        await b.recv()
    await asyncio.sleep(0.1)
    assert sent > stalled, "send() did not resume after the reader caught up"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_send_nowait_refuses_once_the_buffer_limit_is_hit() -> None:
    a_sock, b_sock = socketpair()
    a = await open_connection(a_sock, name="a", max_frame=4096, max_buffered=64 * 1024)
    b = await open_connection(b_sock, name="b")
    msg = ValueAdd(id=1, value_id=1, value=WireObject(type="m:T", data="z" * 3000))

    async def flood() -> None:
        for _ in range(10_000):
            a.send_nowait(msg)
            await asyncio.sleep(0)

    with pytest.raises(PeerNotReading, match="does not read"):
        await flood()
    await a.aclose()
    await b.aclose()


async def test_peer_close_is_connection_closed(pair: tuple[Connection, Connection]) -> None:
    a, b = pair
    await a.aclose()
    with pytest.raises(ConnectionClosed):
        await b.recv()
    with pytest.raises(ConnectionClosed):
        await a.send(Heartbeat(seq=1))


async def test_lazy_frame_rides_with_the_next_urgent_one(
    pair: tuple[Connection, Connection],
) -> None:
    a, b = pair
    writes: list[bytes] = []
    real_write = a._writer.write

    def counting_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        real_write(data)

    a._writer.write = counting_write  # type: ignore[method-assign]
    a.lazy_delay = 10.0  # only the urgent frame may take it out
    a.send_nowait(Heartbeat(seq=1), urgent=False)
    await asyncio.sleep(0.01)
    assert writes == []  # still waiting for company
    a.send_nowait(Heartbeat(seq=2))
    got = [await b.recv() for _ in range(2)]
    assert [getattr(m, "seq", None) for m in got] == [1, 2]  # order kept
    assert len(writes) == 1  # one write for both


async def test_lone_lazy_frame_goes_out_after_the_delay(
    pair: tuple[Connection, Connection],
) -> None:
    a, b = pair
    a.lazy_delay = 0.01
    a.send_nowait(Heartbeat(seq=7), urgent=False)
    async with asyncio.timeout(2):
        got = await b.recv()
    assert isinstance(got, Heartbeat)
    assert got.seq == 7


async def test_a_larger_frame_limit_set_later_still_receives_large_frames() -> None:
    """A warm spare's connection gets the plugin's ``max_frame`` after it was opened."""
    a_sock, b_sock = socketpair()
    a = await open_connection(a_sock, name="a", max_frame=4096)
    b = await open_connection(b_sock, name="b", max_frame=4096)
    a.max_frame = b.max_frame = 1 << 20
    big = ValueAdd(id=1, value_id=1, value=WireObject(type="m:T", data="x" * 300_000))
    await a.send(big)
    async with asyncio.timeout(5):
        got = await b.recv()
    assert got == big
    await a.aclose()
    await b.aclose()

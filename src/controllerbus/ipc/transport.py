"""Length-prefixed frames over a Unix stream socket, with back-pressure.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON
(one :mod:`controllerbus.ipc.messages` message). Both ends of a plugin connection
use :class:`Connection`:

* :meth:`Connection.send` writes a frame and awaits the stream's ``drain()``, so a
  sender whose peer stops reading is paused once the kernel buffer and the
  transport's high-water mark are full (back-pressure);
* :meth:`Connection.send_nowait` is for synchronous callers (bus value callbacks):
  it writes without waiting, and refuses with :class:`PeerNotReading` once more
  than ``max_buffered`` bytes are queued for a peer that does not read; frames
  sent with ``urgent=False`` wait (at most ``lazy_delay``) for the next urgent
  frame and share its write;
* :meth:`Connection.recv` returns the next message or raises
  :class:`ProtocolError` for a frame that is empty, larger than ``max_frame``, not
  JSON or not a known message. A protocol error closes the connection: the caller
  cannot resynchronise a byte stream after a bad length prefix.

:func:`socketpair` makes the two ends used by a host and its child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from pydantic import ValidationError

from controllerbus.errors import ControllerBusError
from controllerbus.ipc.messages import Message, decode_message, encode_message

__all__ = [
    "DEFAULT_LAZY_DELAY",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_FRAME",
    "Connection",
    "ConnectionClosed",
    "FrameTooLarge",
    "MalformedFrame",
    "PeerNotReading",
    "ProtocolError",
    "open_connection",
    "socketpair",
]

DEFAULT_MAX_FRAME = 1 << 20
"""Largest frame payload accepted or sent (1 MiB)."""

DEFAULT_MAX_BUFFERED = 64 << 20
"""Bytes :meth:`Connection.send_nowait` may queue for a peer that does not read."""

DEFAULT_LAZY_DELAY = 0.002
"""Longest wait of a non-urgent frame for an urgent one to ride along with (s)."""

_HEADER = struct.Struct(">I")


class IPCError(ControllerBusError):
    """Base of the transport's errors."""


class ConnectionClosed(IPCError):
    """The peer closed the connection (or it was closed here)."""


class ProtocolError(IPCError):
    """The peer sent something that is not a valid frame; the connection is closed."""


class FrameTooLarge(ProtocolError):
    """A frame's length prefix exceeds the connection's ``max_frame``."""


class MalformedFrame(ProtocolError):
    """A frame is empty, not UTF-8 JSON, or not a known message."""


class PeerNotReading(IPCError):
    """Too many bytes are queued for a peer that does not read them."""


class Connection:
    """One end of a framed message connection over an asyncio stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        name: str = "ipc",
        max_frame: int = DEFAULT_MAX_FRAME,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        lazy_delay: float = DEFAULT_LAZY_DELAY,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.name = name
        self.max_frame = max_frame
        self.max_buffered = max_buffered
        self._closed = False
        self.close_reason: str | None = None
        self._corked: list[bytes] = []
        self._corked_size = 0
        self._turn_open = False
        self._corked_urgent = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self.lazy_delay = lazy_delay

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sending -------------------------------------------------------------------------

    def _frame(self, message: Message) -> bytes:
        payload = encode_message(message)
        if len(payload) > self.max_frame:
            raise FrameTooLarge(
                f"{self.name}: refusing to send a {message.kind!r} message of "
                f"{len(payload)} bytes (limit {self.max_frame}); send smaller values"
            )
        return _HEADER.pack(len(payload)) + payload

    def send_nowait(self, message: Message, *, urgent: bool = True) -> None:
        """Queue ``message`` without waiting (for synchronous callers).

        An urgent frame that is the first of its loop turn is written at once,
        together with any frames still queued before it; the frames after it in the
        same turn go out together in one write at the end of the turn (one system
        call and one wake-up of the peer instead of one per message).

        A frame sent with ``urgent=False`` (bookkeeping nobody waits for: a
        release, the idle after a directive's values) waits for the next urgent
        frame, or at most ``lazy_delay`` seconds, and rides along with it: a
        request/answer exchange then costs one write each way, not two.

        Raises:
            ConnectionClosed: the connection is closed.
            FrameTooLarge: the encoded message exceeds ``max_frame`` (nothing sent).
            PeerNotReading: more than ``max_buffered`` bytes are already queued.
        """
        if self._closed or self._writer.is_closing():
            raise ConnectionClosed(f"{self.name}: connection is closed")
        frame = self._frame(message)
        queued = self._writer.transport.get_write_buffer_size() + self._corked_size
        if queued + len(frame) > self.max_buffered:
            raise PeerNotReading(
                f"{self.name}: {queued} bytes already queued for a peer that does not "
                f"read (limit {self.max_buffered})"
            )
        if not urgent:
            self._corked.append(frame)
            self._corked_size += len(frame)
            if self._lazy_timer is None and not self._turn_open:
                self._lazy_timer = asyncio.get_running_loop().call_later(
                    self.lazy_delay, self._flush
                )
            return
        self._corked_urgent = True
        if self._turn_open:
            # Not the first frame of this loop turn: coalesce into one write.
            self._corked.append(frame)
            self._corked_size += len(frame)
            return
        # The first frame of a turn goes out at once (lowest latency), with the lazy
        # frames queued before it; the ones after it in the same turn wait for the
        # flush at the end of the turn.
        if self._corked:
            self._corked.append(frame)
            self._flush()
        else:
            self._writer.write(frame)
        self._turn_open = True
        asyncio.get_running_loop().call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self._turn_open = False
        if self._corked_urgent:
            self._flush()
        elif self._corked and self._lazy_timer is None:
            self._lazy_timer = asyncio.get_running_loop().call_later(self.lazy_delay, self._flush)

    def _flush(self) -> None:
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        self._corked_urgent = False
        frames, self._corked, self._corked_size = self._corked, [], 0
        if frames and not self._closed and not self._writer.is_closing():
            self._writer.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def send(self, message: Message) -> None:
        """Write ``message`` and wait until the stream accepts more (back-pressure).

        Raises:
            ConnectionClosed: the connection is closed or the peer went away.
            FrameTooLarge: the encoded message exceeds ``max_frame`` (nothing sent).
        """
        if self._closed or self._writer.is_closing():
            raise ConnectionClosed(f"{self.name}: connection is closed")
        frame = self._frame(message)
        self._flush()  # keep the order of frames queued by send_nowait
        self._writer.write(frame)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"{self.name}: peer went away: {exc}") from exc

    # -- receiving -----------------------------------------------------------------------

    async def recv_frame(self) -> bytes:
        """Return the next frame's payload.

        Raises:
            ConnectionClosed: end of stream (also in the middle of a frame).
            FrameTooLarge: the length prefix exceeds ``max_frame`` (connection closed).
            MalformedFrame: the length prefix is 0 (connection closed).
        """
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (length,) = _HEADER.unpack(header)
            if length == 0:
                raise self._fail(MalformedFrame(f"{self.name}: empty frame (length 0)"))
            if length > self.max_frame:
                raise self._fail(
                    FrameTooLarge(
                        f"{self.name}: frame of {length} bytes exceeds the limit of "
                        f"{self.max_frame} bytes; connection closed"
                    )
                )
            return await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            self.close(f"{self.name}: peer closed the connection")
            where = "" if not exc.partial else f" after {len(exc.partial)} bytes of a frame"
            raise ConnectionClosed(f"{self.name}: peer closed the connection{where}") from None
        except (ConnectionError, OSError) as exc:
            self.close(f"{self.name}: {exc}")
            raise ConnectionClosed(f"{self.name}: connection lost: {exc}") from None

    async def recv(self) -> Message:
        """Return the next message.

        Raises:
            ConnectionClosed: end of stream.
            ProtocolError: the frame is too large or not a valid message (closed).
        """
        payload = await self.recv_frame()
        try:
            return decode_message(payload)
        except (ValidationError, ValueError) as exc:
            raise self._fail(
                MalformedFrame(f"{self.name}: malformed message: {_short(exc)}")
            ) from None

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self.close(str(exc))
        return exc

    # -- closing -------------------------------------------------------------------------

    def close(self, reason: str | None = None) -> None:
        """Close both directions; idempotent. The first reason given is kept."""
        if self.close_reason is None and reason is not None:
            self.close_reason = reason
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._flush()  # an error message queued just before closing still goes out
        self._closed = True
        with contextlib.suppress(Exception):
            self._writer.close()

    async def aclose(self, reason: str | None = None, *, grace: float = 1.0) -> None:
        """Close and wait until the transport has gone.

        Queued bytes get ``grace`` seconds to reach a peer that may not read them;
        then the transport is aborted.
        """
        self.close(reason)
        # Not asyncio.timeout: cancelling wait_closed() would cancel the shared waiter.
        waiter = asyncio.ensure_future(self._writer.wait_closed())
        done, _ = await asyncio.wait({waiter}, timeout=grace)
        if not done:
            self._writer.transport.abort()
            await asyncio.wait({waiter}, timeout=grace)
        if waiter.done() and not waiter.cancelled():
            waiter.exception()  # retrieved: a reset peer is not an error here


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        return f"{where}: {first.get('msg', 'invalid')} ({exc.error_count()} error(s))"
    return str(exc)[:200]


async def open_connection(
    sock: socket.socket,
    *,
    name: str = "ipc",
    max_frame: int = DEFAULT_MAX_FRAME,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> Connection:
    """Wrap a connected stream socket (one end of :func:`socketpair`)."""
    # The reader pauses the socket once it buffers 2 x limit bytes: a receiver that
    # stops reading stops the sender (through its drain()).
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=max(max_frame, 1 << 16))
    return Connection(reader, writer, name=name, max_frame=max_frame, max_buffered=max_buffered)


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of Unix stream sockets; the second is inheritable (for a child)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child.set_inheritable(True)
    return parent, child

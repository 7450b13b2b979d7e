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
* received bytes are cut into frames and validated in the callback that read
  them; :meth:`Connection.set_handler` hands each message to a synchronous handler
  right there (no task wakes up per message), otherwise :meth:`Connection.recv`
  returns the next one. A frame that is empty, larger than ``max_frame``, not JSON
  or not a known message is a :class:`ProtocolError` and closes the connection:
  nobody can resynchronise a byte stream after a bad length prefix.

:func:`socketpair` makes the two ends used by a host and its child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import SupportsIndex

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
_BURST = 64
"""Messages handled in one go before the loop gets to run something else."""

logger = logging.getLogger(__name__)


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
        # Receiving: bytes are parsed into messages as they arrive (no reader task).
        self._buf = bytearray()
        self._inbox: deque[tuple[Message, int]] = deque()
        self._inbox_bytes = 0
        self._paused = False
        self._failure: IPCError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._handler: Callable[[Message], None] | None = None
        self._on_failure: Callable[[IPCError], None] | None = None
        self._pump_scheduled = False
        if isinstance(reader, _SinkReader):
            reader.sink, reader.end = self._on_bytes, self._on_end
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
    def _limit(self) -> int:
        """Bytes buffered here (unhandled) before reading pauses; at least two frames."""
        return 2 * max(self.max_frame, 1 << 16)

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

    def set_handler(
        self,
        handler: Callable[[Message], None],
        on_failure: Callable[[IPCError], None],
    ) -> None:
        """Hand every message to ``handler`` as it arrives, instead of :meth:`recv`.

        ``handler`` runs in the callback that read the bytes: no task wakes up per
        message. A :class:`ProtocolError` it raises (or any exception, logged)
        closes the connection like a malformed frame. ``on_failure`` is called
        once with the error that ended the connection (:class:`ConnectionClosed`
        for the peer going away). Messages received before this call come first.
        """
        self._handler, self._on_failure = handler, on_failure
        self._schedule_pump()

    async def recv(self) -> Message:
        """Return the next message.

        Raises:
            ConnectionClosed: end of stream (also in the middle of a frame).
            ProtocolError: the frame is too large, empty or not a valid message
                (the connection is closed).
        """
        while True:
            if self._inbox:
                msg, size = self._inbox.popleft()
                self._inbox_bytes -= size
                self._flow()
                return msg
            if self._failure is not None:
                raise self._failure.with_traceback(None)
            if len(self._buf) >= _HEADER.size and not self._pump_scheduled:
                self._pump()  # frames left unparsed while the inbox was full
                if self._inbox or self._failure is not None:
                    continue
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _on_bytes(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._buf += data
        self._pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Parse the complete frames buffered; hand them out or queue them for recv."""
        self._pump_scheduled = False
        handler = self._handler
        budget = _BURST
        while handler is not None and self._inbox and self._failure is None:
            msg, size = self._inbox.popleft()
            self._inbox_bytes -= size
            if not self._handle(handler, msg):
                break
        buf = self._buf
        while self._failure is None and len(buf) >= _HEADER.size:
            if handler is None and self._inbox_bytes > self._limit:
                break  # nobody reads: leave it in the buffer, reading pauses below
            (length,) = _HEADER.unpack_from(buf)
            if length == 0:
                self._set_failure(MalformedFrame(f"{self.name}: empty frame (length 0)"))
                break
            if length > self.max_frame:
                self._set_failure(
                    FrameTooLarge(
                        f"{self.name}: frame of {length} bytes exceeds the limit of "
                        f"{self.max_frame} bytes; connection closed"
                    )
                )
                break
            end = _HEADER.size + length
            if len(buf) < end:
                break
            payload = bytes(buf[_HEADER.size : end])
            del buf[:end]
            try:
                msg = decode_message(payload)
            except (ValidationError, ValueError) as exc:
                self._set_failure(MalformedFrame(f"{self.name}: malformed message: {_short(exc)}"))
                break
            if handler is None:
                self._inbox.append((msg, end))
                self._inbox_bytes += end
                self._wake()
                continue
            if not self._handle(handler, msg):
                break
            budget -= 1
            if budget == 0 and len(buf) >= _HEADER.size:
                self._schedule_pump()  # a burst of messages must not starve the loop
                break
        self._flow()

    def _handle(self, handler: Callable[[Message], None], msg: Message) -> bool:
        try:
            handler(msg)
        except ProtocolError as exc:
            self._set_failure(exc)
            return False
        except Exception as exc:
            logger.exception("%s: handling a %r message failed", self.name, msg.kind)
            self._set_failure(ProtocolError(f"{self.name}: handling {msg.kind!r} failed: {exc}"))
            return False
        return not self._closed

    def _flow(self) -> None:
        """Pause reading the socket while too much is buffered here (back-pressure)."""
        if self._closed:
            return
        want_pause = self._inbox_bytes + len(self._buf) > self._limit
        if want_pause == self._paused:
            return
        self._paused = want_pause
        transport = self._writer.transport
        with contextlib.suppress(Exception):
            if want_pause:
                transport.pause_reading()  # type: ignore[attr-defined]
            else:
                transport.resume_reading()  # type: ignore[attr-defined]
        if not want_pause and self._buf:
            self._schedule_pump()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_end(self, exc: Exception | None) -> None:
        if self._failure is not None:
            return
        if exc is None:
            held = len(self._buf)
            partial = held - _HEADER.size if held >= _HEADER.size else held
            where = f" after {partial} bytes of a frame" if partial else ""
            failure = ConnectionClosed(f"{self.name}: peer closed the connection{where}")
        else:
            failure = ConnectionClosed(f"{self.name}: connection lost: {exc}")
        self._set_failure(failure)

    def _set_failure(self, exc: IPCError) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        self.close(str(exc))
        self._wake()
        if self._on_failure is not None:
            self._on_failure(exc)

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
        if self._failure is None:
            self._set_failure(ConnectionClosed(f"{self.name}: connection is closed"))

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
    loop = asyncio.get_running_loop()
    reader = _SinkReader(limit=max(max_frame, 1 << 16), loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_unix_connection(lambda: protocol, sock=sock)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return Connection(reader, writer, name=name, max_frame=max_frame, max_buffered=max_buffered)


class _SinkReader(asyncio.StreamReader):
    """A stream reader that passes its bytes and its end on to a :class:`Connection`."""

    sink: Callable[[bytes], None] | None = None
    end: Callable[[Exception | None], None] | None = None

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if self.sink is None:
            super().feed_data(data)
        else:
            self.sink(bytes(data))

    def feed_eof(self) -> None:
        super().feed_eof()
        if self.end is not None:
            self.end(None)

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        if self.end is not None:
            self.end(exc)


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of Unix stream sockets; the second is inheritable (for a child)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child.set_inheritable(True)
    return parent, child

"""HTTP/1.1 to the upstream: one asyncio Protocol per connection and a strict pool.

Each read from the upstream socket is fed to llhttp (httptools, a C parser) on the side; the
body bytes it reports are handed to a sink synchronously, from `data_received`, so relaying a
frame costs no task switch, no stream reader and no per-read timer.

The reuse rule (the fix for cross-client response desync): a connection goes back to the pool
only when its last response ended exactly: the request was fully sent, the response framing
was fully consumed (Content-Length or the final chunk), no byte followed it in the same read
(but empty lines, which llhttp skips as RFC 9112 2.2 allows before a message),
the upstream did not ask to close, and the response was complete before the proxy released it.
A pooled connection that receives any byte while idle is closed at once, never reused. Bytes
that follow a response which has no body (HEAD, 1xx, 204, 304) or a complete response mark the
connection dead and are never forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from sse_audit_proxy.core.audit import End
from sse_audit_proxy.server.tcp import bytes_received

# How long an idle pooled connection is kept, or less: a second under what the upstream's
# `Keep-Alive: timeout=N` says it keeps one, so that a request is never written as the upstream
# closes it (a POST written then got `502 upstream_disconnected`). uvicorn (LiteLLM, vLLM),
# hypercorn and Node close idle connections after 5 s, uvicorn without saying so: 4 s. An
# upstream seen closing idle connections sooner teaches its pool a shorter time (Pool._learn).
POOL_IDLE_SECONDS = 4.0
# What is learned from an upstream's close of an idle connection: its age less this margin (a
# request in flight when it closes is lost), for LEARNED_FOR seconds. Closes younger than
# LEARN_FROM teach nothing, and what was learned is forgotten in time: an upstream that restarts
# closes them all, whatever their age, and once taught for good, it cost every later request
# after a short pause a new connection.
IDLE_MARGIN = 0.5
LEARN_FROM = 1.0
LEARNED_FOR = 600.0
_KEEP_ALIVE_TIMEOUT = re.compile(rb"(?:^|[,;\s])timeout\s*=\s*\"?(\d{1,6})", re.I)
# RFC 8305 (Happy Eyeballs): a name's next address is tried when the last attempt failed or had
# no answer for this long, the attempts racing from then on. Tried strictly in turn, one address
# that drops packets (IPv6 without a route) cost every connect the whole --connect-timeout.
ATTEMPT_DELAY = 0.25
# Idle connections kept per upstream; more are closed when released.
POOL_MAX_IDLE = 256
_NO_BODY_STATUS = frozenset({204, 304})
# Bytes of a response that are not its body, between two body bytes (or before the first): the
# head and any interim (1xx) responses, chunk-size lines and trailers. llhttp holds no limit
# and httptools gathers a header's value in one growing bytes object: an upstream sending an
# endless head made the proxy grow by gigabytes. nginx refuses an upstream head past its
# proxy_buffer_size (4 or 8 KiB); this leaves room for large cookie and CORS sets.
MAX_RESPONSE_HEAD = 64 << 10
# Reads (of at most 64 KiB) of what a failed connection's socket still holds (`_read_left`).
_LEFT_READS = 16


class UpstreamError(Exception):
    """A failure to get a response head; `code` is the proxy's error code for it."""

    code = "upstream_error"


class ConnectTimeout(UpstreamError):
    code = "upstream_connect_timeout"


class IdleTimeout(UpstreamError):
    code = "upstream_idle_timeout"


class TotalTimeout(UpstreamError):
    code = "upstream_timeout"


class DNSError(UpstreamError):
    code = "upstream_dns_error"


class Unreachable(UpstreamError):
    code = "upstream_unreachable"

    @property
    def why(self) -> str | None:
        """The connect's failure in a few words (`connection refused`), when it is a common one:
        what an operator reads first from the client's 502."""
        return _LOCAL_LIMITS.get(self._errno) or _CONNECT_FAILURES.get(self._errno)

    @property
    def _errno(self) -> int:
        cause = self.__cause__
        return (cause.errno or 0) if isinstance(cause, OSError) else 0


# Connect failures that are the proxy's own want of a resource, not the upstream's fault.
_LOCAL_LIMITS = {
    errno.EMFILE: "the proxy is out of file descriptors (EMFILE)",
    errno.ENFILE: "the host is out of file descriptors (ENFILE)",
    errno.EADDRNOTAVAIL: "the proxy is out of local ports (EADDRNOTAVAIL)",
    errno.ENOBUFS: "the host is out of socket buffers (ENOBUFS)",
}


# The upstream's side of a failed connect, as an operator would say it.
_CONNECT_FAILURES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTDOWN: "host is down",
}


def _unreachable(exc: BaseException | None) -> Unreachable:
    """The error for connects that failed, the last with `exc` (None: there was no address)."""
    error = Unreachable(type(exc).__name__ if exc is not None else "no address")
    error.__cause__ = exc
    return error


class TLSError(UpstreamError):
    code = "upstream_tls_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Disconnected(UpstreamError):
    code = "upstream_disconnected"


class BadResponse(UpstreamError):
    code = "upstream_bad_response"


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_monotonic = time.monotonic  # the clock of reads, timeouts and the sink: one global lookup
BodySink = Callable[[bytes, float], "End | None"]  # (body, arrival time): why to stop, or None


@dataclass(slots=True, frozen=True)
class Target:
    """Where requests go; the pool key (TLS settings included via the context object)."""

    scheme: str
    host: str
    port: int
    ssl: ssl.SSLContext | None


def _discard(_body: bytes, _t: float) -> None:
    """The sink of a relay that has ended: what llhttp still reports goes nowhere."""
    return None


class Connection(asyncio.Protocol):
    """One upstream HTTP/1.1 connection; serves one request at a time."""

    __slots__ = (
        "_closed_cleanly",
        "_deadline",
        "_early",
        "_end",
        "_first",
        "_head",
        "_held",
        "_idle",
        "_idle_handle",
        "_loop",
        "_more",
        "_not_body",
        "_parser",
        "_pool",
        "_sink",
        "_write_waiter",
        "body_done",
        "chunked",
        "content_length",
        "dead",
        "head_only",
        "headers",
        "keep_alive",
        "keep_idle",
        "last_read",
        "on_answer",
        "pooled_at",
        "pooled_received",
        "reason",
        "sent",
        "status",
        "target",
        "transport",
        "upload_done_at",
        "uses",
    )

    def __init__(self, pool: Pool, target: Target) -> None:
        self._pool = pool
        self.target = target
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.dead = False  # never to be reused
        self.uses = 0  # requests started on it
        self._write_waiter: asyncio.Future[None] | None = None
        # Called when the upstream wants no more of the body (see _wake_writer): set by the
        # proxy while it waits for the client's next body bytes.
        self.on_answer: Callable[[], None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None  # pooled: close when idle too long
        self.pooled_at = 0.0  # when (time.monotonic) it last went idle in the pool (0: never)
        self.pooled_received: int | None = None  # the kernel's count of bytes in, when pooled
        self._closed_cleanly = False  # the peer ended its side (over TLS: with close_notify)
        self._reset()

    def _reset(self) -> None:
        self._parser: httptools.HttpResponseParser | None = None
        self._head: asyncio.Future[None] | None = None
        self._end: asyncio.Future[End] | None = None
        self._sink: BodySink | None = None
        self._early: list[tuple[bytes, float]] | None = None  # body reads before relay(), timed
        # The body bytes of the read being parsed, handed on together once it is (_flush).
        self._first: bytes | None = None
        self._more: list[bytes] | None = None
        self._deadline = 0.0  # when (time.monotonic) the total timeout ends the request
        self._idle = 0.0
        self._held = False  # not read while the client is behind: the idle clock stands still
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_only = False  # HEAD request: the response has no body whatever it says
        self.body_done = False  # the current response's framing was consumed exactly
        self.sent = False  # the request (head and body) was fully written
        # When (time.monotonic) the last request byte was written, an early answer or not: the
        # upstream's clock (TTFB, TTFT, gaps) starts here, not when a client began a slow upload.
        self.upload_done_at = 0.0
        self.chunked = False
        self.content_length: int | None = None
        self.keep_alive = False  # the upstream allows another request on this connection
        self.keep_idle = POOL_IDLE_SECONDS  # how long it may wait in the pool after this response
        # The idle clock: the last progress (the final head, body bytes either way), inf while
        # paused for the client; during a read, that read's arrival time (the sink's).
        self.last_read = 0.0
        self._not_body = 0  # bytes fed to the parser since the last body bytes (MAX_RESPONSE_HEAD)

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.body_done:
            self._kill()  # bytes nobody asked for: this connection can never be trusted again
            return
        progress = self.last_read
        self.last_read = _monotonic()  # the bytes' arrival time, which the sink is given too
        self._not_body += len(data)  # on_body and the final head set it back to 0
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._flush()
            self._fail(BadResponse("upgrade"), End.UPSTREAM_BROKEN)
        except httptools.HttpParserError:
            self._flush()  # what was framed before the fault goes on
            self._fail(BadResponse("unparseable response"), End.UPSTREAM_BROKEN)
        else:
            if self._first is not None:
                self._flush()
            if self._not_body:
                # Neither a body byte nor the final head: framing only (a head or a chunk
                # extension trickled, interim 100s), which must not hold off the idle timeout.
                self.last_read = progress
                if self._not_body > MAX_RESPONSE_HEAD:
                    self._fail(BadResponse("response head too large"), End.UPSTREAM_BROKEN)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.status and self._parser is not None:
            self._read_left()
        # A clean close that the proxy did not make, of a connection that served a request (one
        # made ahead of any, for readiness, may be closed for want of a request instead).
        by_upstream = not self.dead and exc is None and self.uses > 0
        self.dead = True
        self._pool._forget(self, closed_idle=by_upstream)
        self._wake_writer()
        if self._parser is None or self.body_done:
            return
        if self.status and not self.chunked and self.content_length is None and not self.head_only:
            if exc is None and (self._closed_cleanly or self.target.ssl is None):
                self._message_complete()  # close-delimited body: the close is its end
                return
            # A reset is a cut, not the body's end (the openai SDK and curl fail on it), and so
            # over TLS is a close without close_notify (RFC 8446 6.1): either reached the
            # client as a clean, complete answer.
            self._fail(
                Disconnected("reset" if exc is not None else "TLS closed without close_notify"),
                End.UPSTREAM_BROKEN,
            )
            return
        self._fail(Disconnected("closed"), End.UPSTREAM_BROKEN)

    def eof_received(self) -> None:
        # uvloop calls it over TLS only after the peer's close_notify (asyncio's own loop calls
        # it for a bare TCP close too: there a cut close-delimited body cannot be told).
        self._closed_cleanly = True

    def _read_left(self) -> None:
        """The transport failed before a response head was read: read what the socket holds.

        An upstream that refuses a request after its head (`413`, `401`) answers, then closes
        with the body unread, so its kernel resets the connection. A body write that meets the
        reset fails, and the transport stops reading at once: the answer, already in the socket,
        was lost and the client got `502 upstream_disconnected` (an SDK then retries, uploading
        the body again). nginx and curl read the response after a send error; asyncio's and
        uvloop's transports close their socket only after `connection_lost` returns, so it is
        read here, without blocking (the reset socket gives what it holds, then an error).
        Over TLS the bytes are records only the transport's own SSL object can read: the
        answer stays lost there.
        """
        transport = self.transport
        if transport is None or self.target.ssl is not None:
            return
        sock = transport.get_extra_info("socket")
        fd = -1 if sock is None else sock.fileno()
        if fd < 0 or os.get_blocking(fd):
            return
        for _ in range(_LEFT_READS):
            try:
                data = os.read(fd, 65536)
            except OSError:  # nothing more (EAGAIN), or the reset once the data is read
                return
            if not data:
                return
            self.data_received(data)
            if self.dead or self.body_done:
                return

    def pause_writing(self) -> None:
        if self._write_waiter is None:
            self._write_waiter = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.status and self.status >= 200:
            self._kill()  # a second response: bytes after the end of ours

    # Once our response is complete, llhttp goes on parsing whatever follows as the next
    # response: those callbacks must not touch the head we are relaying (the guards below).

    def on_status(self, status: bytes) -> None:
        if not self.body_done:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # Once the final head is in (status set), llhttp reports a chunked body's trailers here
        # too, before the head is relayed when they came in the same read: they are dropped,
        # never merged into the head (a trailer Content-Encoding once made curl fail to decode).
        if not self.status:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.body_done:
            return
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            # llhttp reads any three digits. A status under 100 was taken for a final answer
            # whose end the response callbacks never saw (they end one at 200 and up): the
            # upstream's next response went on to the client as more of its body.
            self._fail(BadResponse(f"status {status}"), End.UPSTREAM_BROKEN)
            return
        if status < 200:
            if status == 101:  # we never asked to switch protocols
                self._fail(BadResponse("101"), End.UPSTREAM_BROKEN)
                return
            self.reason = b""  # interim response (100 Continue, 103): not forwarded
            self.headers = []
            return
        if not self._read_framing():
            self._fail(BadResponse("transfer-encoding"), End.UPSTREAM_BROKEN)
            return
        # The head alone may end its lines with LF: llhttp's leniency reaches into the chunk
        # framing unevenly (`0\n\n` never ended, the client held a finished stream until the
        # idle timeout; a second review), and the body's framing is the upstream's own.
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=False)
        self.status = status
        self._not_body = 0  # the head ended (a larger one that came in one read is let through)
        if self.from_pool:
            self._ack_at_once()
        # Read here: once the message completes llhttp has reset what this is computed from.
        self.keep_alive = parser.should_keep_alive()
        if self.chunked and parser.get_http_version() == "1.0":
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the
            # connection is closed after it, whatever its Connection header says.
            self.keep_alive = False
        if self.keep_alive:
            self.keep_idle = _keep_idle(self.headers)
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)
        if self.takes_no_body():
            self._wake_writer()  # an upload blocked on an upstream that stopped reading
        if self._sink is None and self.transport is not None:
            self.transport.pause_reading()  # until the relay is ready for the body
        if self.head_only or status in _NO_BODY_STATUS:
            # Never pooled: a server that writes a body after such a head anyway (`do_HEAD =
            # do_GET`), a moment later, would have it read as the next client's answer.
            self.keep_alive = False
            self._message_complete()

    @property
    def from_pool(self) -> bool:
        """It waited in the pool before the request it serves (it may have been closed then)."""
        return self.pooled_at > 0.0

    def _ack_at_once(self) -> None:
        """A reused connection's response: acknowledge its segments as they are read.

        Linux delays acknowledgements on a connection where it sends soon after it receives
        (request after response, as on a pooled connection). An upstream that streams with
        Nagle on (tornado) holds each small write until the last is acknowledged: its tokens
        came 40 ms late and in clumps, judged `buffered`, where a client connecting afresh, whose
        segments are acknowledged at once, saw them paced. TCP_QUICKACK ends that mode until
        the proxy sends again (the next request)."""
        if _QUICKACK is None or self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def _read_framing(self) -> bool:
        """`chunked` and `content_length` from the final head; False: framing we do not read.

        As nginx: a Transfer-Encoding other than exactly one `chunked` is refused. llhttp goes
        by the last coding, so `gzip, chunked` reached the client still gzipped under the
        proxy's own chunking, and `chunked, gzip` or `xchunked` (read to the close) were cut
        for want of a final chunk.
        """
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"transfer-encoding":
                if self.chunked or value.strip(b" \t").lower() != b"chunked":
                    return False
                self.chunked = True
            elif lower == b"content-length" and value.strip().isdigit():
                self.content_length = int(value)
        if self.chunked:
            self.content_length = None
        return True

    def on_body(self, body: bytes) -> None:
        if self.body_done or not self.status:
            self._kill()  # body bytes after a response that has none
            return
        self._not_body = 0
        if self._first is None:
            self._first = body
        elif self._more is None:
            self._more = [body]
        else:
            self._more.append(body)

    def _flush(self) -> None:
        """Hand on the body bytes of the read being parsed, as one piece with its arrival time.

        One piece a read, not one a chunk: an upstream writing each body byte as its own chunk
        made each byte a write to the client and a feed of the audit, 14 times a normal
        stream's CPU a byte, and every other stream on the loop waited seconds (an outside
        review)."""
        first = self._first
        if first is None:
            return
        more = self._more
        self._first = self._more = None
        body = first if more is None else b"".join((first, *more))  # a paced frame: no join
        sink = self._sink
        if sink is None:
            if self._early is None:
                self._early = []
            self._early.append((body, self.last_read))
            return
        why = sink(body, self.last_read)
        if why is not None:
            self.stop_relay(why)

    def on_message_complete(self) -> None:
        if self.status >= 200 and not self.body_done:
            self._flush()
            self._message_complete()

    # The request ------------------------------------------------------------------------

    def start(self, head: bytes, *, head_only: bool, idle: float, deadline: float) -> None:
        """Send a request head; the response is awaited with `response_head()`."""
        self._cancel_timer()
        self.uses += 1
        self._parser = httptools.HttpResponseParser(self)
        # A head line ended by LF alone (RFC 9112 2.2 lets a recipient accept it; httpx, curl
        # and nginx do, and hand-written gateways send it) was a 502. Nothing else is lenient: a
        # CR alone is still refused, and the body's chunk framing is strict again once the head
        # has ended (on_headers_complete). The client's head is written anew.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._head = self._loop.create_future()
        self._end = self._loop.create_future()
        self.head_only = head_only
        self._idle = idle
        self.last_read = self.upload_done_at = now = _monotonic()
        self._deadline = deadline
        # One timer per request covers both timeouts (a timer handle per stream is memory).
        self._idle_handle = self._loop.call_later(min(now + idle, deadline) - now, self._check)
        assert self.transport is not None
        self.transport.write(head)

    async def write(self, data: bytes) -> bool:
        """Write request body bytes; False when the upstream is gone or refused the body.

        An early answer stops the body only when it refuses it (a status of 400 or more) or the
        upstream is closing (RFC 9112 9.5): a full-duplex upstream answers `200` and reads on,
        and waited for a body end that never came. Body bytes the upstream takes are progress
        for the idle clock: it is not idle while it reads a slow upload.
        """
        if self.transport is None or self.takes_no_body():
            return False
        self.transport.write(data)
        if self._write_waiter is not None:
            await self._write_waiter  # also woken by an answer that takes no more of the body
        self.last_read = self.upload_done_at = _monotonic()  # sent before the relay pauses
        return not self.takes_no_body()

    def takes_no_body(self) -> bool:
        """The rest of the request body has nowhere to go: the upstream is gone, refused it,
        is closing, or has answered in full (an upstream that stops reading after its answer
        held the upload, and the client's answer behind it, until it closed)."""
        status = self.status
        return self.dead or self.body_done or bool(status and (status >= 400 or not self.keep_alive))

    def _wake_writer(self) -> None:
        """The upload stops waiting: on the upstream's socket, and (`on_answer`) on the client."""
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        on_answer = self.on_answer
        if on_answer is not None:
            on_answer()

    async def response_head(self) -> None:
        assert self._head is not None
        await self._head
        self._head = None  # done with: an open stream keeps one future, not two

    def relay(self, sink: BodySink, not_before: float = 0.0) -> asyncio.Future[End]:
        """Hand every body read to `sink` from now on; the future says why the body ended.
        Reads that came before are timed when they arrived, but not before `not_before`."""
        assert self._end is not None
        self._sink = sink
        early, self._early = self._early, None
        if early:
            for body, t in early:
                why = sink(body, max(t, not_before))
                if why is not None:
                    self.stop_relay(why)
                    break
        if not self._end.done() and self.transport is not None and not self._held:
            self.transport.resume_reading()  # not if an early read left the client behind
        return self._end

    def pause_reading(self) -> None:
        """The client is behind (backpressure): the idle clock stops meanwhile. `last_read`
        stays the arrival time of the read in progress, which llhttp may go on relaying."""
        self._held = True
        if self.transport is not None:
            self.transport.pause_reading()

    def stop_idle_clock(self) -> None:
        """The request body's next bytes are the client's to send: the upstream is not idle
        meanwhile (the client's pauses are --body-timeout's). restart_idle_clock() ends it."""
        self.last_read = math.inf

    def restart_idle_clock(self) -> None:
        """From the upstream's last read since the stop, or from now. A check that ran while
        stopped left the timer at the deadline: it is set again, or an upload that paused
        longer than --idle-timeout left a silent upstream to --total-timeout (an outside
        review)."""
        now = _monotonic()
        self.last_read = last = min(self.last_read, now)
        if self._idle_handle is not None and not self._held:
            self._idle_handle.cancel()
            due = min(last + self._idle, self._deadline)
            self._idle_handle = self._loop.call_later(due - now, self._check)

    def resume_reading(self) -> None:
        self._held = False
        self.last_read = now = _monotonic()
        if self._idle_handle is not None:  # the check waited for the deadline: idle again now
            self._idle_handle.cancel()
            self._idle_handle = self._loop.call_later(
                min(now + self._idle, self._deadline) - now, self._check
            )
        if self.transport is not None and not self.dead:
            self.transport.resume_reading()

    # Ends ---------------------------------------------------------------------------------

    def stop_relay(self, why: End) -> None:
        """The sink wants no more (its client is gone or too far behind): it gets none.

        llhttp goes on with the rest of the read, and under uvloop more reads came before the
        relay's task ran: a client cut at --max-unsent-bytes (1 MiB) was written 16 MB more.
        """
        self._sink = _discard
        self._finish(why)
        if self.transport is not None:
            self.transport.abort()  # read no more: the connection is never reused

    def _message_complete(self) -> None:
        self.body_done = True
        self._finish(End.UPSTREAM_EOF)
        self._wake_writer()

    def _finish(self, end: End) -> None:
        if end is not End.UPSTREAM_EOF:
            self.dead = True
        self._cancel_timer()
        if self._end is not None and not self._end.done():
            self._end.set_result(end)

    def _fail(self, exc: UpstreamError, end: End) -> None:
        """Before the head: the head waiter raises `exc`; after it, the body ends with `end`."""
        self.dead = True
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
            self._finish(end)
            self._end = None  # nobody will relay a body that never started
        else:
            self._finish(end)
        if self.transport is not None:
            self.transport.abort()

    def _kill(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.abort()

    def _check(self) -> None:
        self._idle_handle = None
        now = _monotonic()
        if now >= self._deadline:
            self._fail(TotalTimeout("total"), End.TOTAL_TIMEOUT)
            return
        due = math.inf if self._held else self.last_read + self._idle  # held: not idle
        if now < due:  # something arrived since: look again then (no timer per read)
            self._idle_handle = self._loop.call_later(min(due, self._deadline) - now, self._check)
            return
        self._fail(IdleTimeout("idle"), End.IDLE_TIMEOUT)

    def _cancel_timer(self) -> None:
        """The one timer: the request's idle/total check, or the pooled connection's expiry."""
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def reusable(self, keep_alive: bool) -> bool:
        return (
            not self.dead
            and self.sent
            and self.body_done
            and keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def release(self) -> None:
        """The proxy is done with this request: pool the connection or close it."""
        self._cancel_timer()
        ok = self.reusable(self.keep_alive)
        keep_idle = self.keep_idle
        self._reset()
        if ok:
            assert self.transport is not None
            self.transport.resume_reading()  # an idle connection must see stray bytes at once
            if self.target.ssl is None:
                self._pool._put(self, keep_idle)
            else:
                # What came over TLS while reading was paused waits in the TLS layer, where
                # `_input_waiting`'s poll of the socket cannot see it; resuming hands it on in
                # the loop's next pass, queued before this. Pooled at once, the connection was
                # handed to the next client with another's stray response (or the upstream's
                # close_notify) waiting in it (outside review).
                self._loop.call_soon(self._pool._put_if_fit, self, keep_idle)
        else:
            self.close()

    def close(self) -> None:
        self.dead = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def idle_expired(self) -> None:
        self._idle_handle = None
        self.close()


class Pool:
    """Idle connections per target; a connection is taken out while a request uses it."""

    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._idle: dict[Target, list[Connection]] = {}
        self._all: set[Connection] = set()
        # Learned (see _learn): how long a target's connections may idle, and until when.
        self._learned_idle: dict[Target, tuple[float, float]] = {}
        self._reached: set[Target] = set()  # targets a connection was ever made to (readiness)

    async def acquire(self, target: Target, *, fresh: bool = False) -> Connection:
        idle = None if fresh else self._idle.get(target)
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if conn.dead or transport is None or transport.is_closing():
                continue
            conn._cancel_timer()
            if _input_waiting(transport) or _received_while_idle(conn, transport):
                conn.close()  # closed by the upstream, or it sent what nobody asked for
                continue
            return conn
        return await self._connect(target)

    async def _connect(self, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                addrs = await _resolve(loop, target.host, target.port)
                if len(addrs) == 1:
                    conn = await self._open(target, *addrs[0])
                else:
                    conn = await self._race(target, addrs)
        except TimeoutError:
            raise ConnectTimeout("connect") from None
        self._reached.add(target)
        return conn

    def has_reached(self, target: Target) -> bool:
        """Whether a connection to `target` was ever made, for a request or for readiness."""
        return target in self._reached

    async def _race(self, target: Target, addrs: list[tuple[int, tuple[str, int]]]) -> Connection:
        """The first address to connect, each next one started when the last attempt failed
        or after ATTEMPT_DELAY (RFC 8305); the attempts that lose are cancelled or closed."""
        waiting = list(addrs)
        pending: set[asyncio.Task[Connection]] = set()
        last: BaseException | None = None
        refused: BaseException | None = None
        won: Connection | None = None
        try:
            while waiting or pending:
                if waiting:
                    pending.add(asyncio.ensure_future(self._open(target, *waiting.pop(0))))
                done, pending = await asyncio.wait(
                    pending, timeout=ATTEMPT_DELAY if waiting else None, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        if won is None:
                            won = task.result()
                        else:
                            task.result().close()  # a second winner in the same pass
                    elif isinstance(exc, Unreachable):
                        last = exc.__cause__
                    elif won is None:
                        refused = exc  # TLS: the upstream's answer, not a path to try around
                if won is not None:
                    return won
                if refused is not None:
                    raise refused
            raise _unreachable(last)
        finally:
            # A cancel (the client left, --connect-timeout) can land in the pass in which an
            # attempt connected: it is done but still among `pending`, and cancel() would not
            # close what it made.
            for task in pending:
                if not task.done():
                    task.cancel()
                elif not task.cancelled() and task.exception() is None:
                    task.result().close()

    async def _open(self, target: Target, family: int, addr: tuple[str, int]) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(
                lambda: Connection(self, target),
                addr[0],
                addr[1],
                family=family,
                ssl=target.ssl,
                server_hostname=target.host if target.ssl is not None else None,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(exc.verify_message or "certificate error") from None
        except ssl.SSLError as exc:
            raise TLSError(exc.reason or "handshake failed") from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            if target.ssl is None:
                raise _unreachable(exc) from exc
            # TCP connected (a refused connect is ConnectionRefusedError), then the peer closed
            # in the handshake: TLS to a port or name that does not speak it, not the network.
            raise TLSError("handshake: connection closed by the upstream") from None
        except OSError as exc:
            raise _unreachable(exc) from exc
        assert isinstance(proto, Connection)
        self._all.add(proto)
        return proto

    def keep(self, conn: Connection) -> None:
        """A connection made ahead of any request: pooled for the first one."""
        self._put(conn, POOL_IDLE_SECONDS)

    def _put_if_fit(self, conn: Connection, keep_idle: float) -> None:
        """Pool `conn` unless what was read since its release made it unfit."""
        if conn.dead or conn.transport is None or conn.transport.is_closing():
            conn.close()
        else:
            self._put(conn, keep_idle)

    def _put(self, conn: Connection, keep_idle: float) -> None:
        idle = self._idle.setdefault(conn.target, [])
        if len(idle) >= POOL_MAX_IDLE:
            conn.close()
            return
        idle.append(conn)
        conn.pooled_at = now = _monotonic()
        # Not of one made ahead of any request (readiness): over TLS 1.3 the server's session
        # tickets come after the handshake, and it was thrown away unused (a second review).
        # Nothing of another client's can be waiting on it.
        conn.pooled_received = bytes_received(conn.transport) if conn.transport and conn.uses else None
        learned = self._learned_idle.get(conn.target)
        if learned is not None:
            if now < learned[1]:
                keep_idle = min(keep_idle, learned[0])
            else:
                del self._learned_idle[conn.target]
        conn._idle_handle = conn._loop.call_later(keep_idle, conn.idle_expired)

    def _forget(self, conn: Connection, *, closed_idle: bool = False) -> None:
        """`conn` is gone; `closed_idle`: the upstream closed it cleanly (maybe while pooled)."""
        self._all.discard(conn)
        idle = self._idle.get(conn.target)
        if idle and conn in idle:
            idle.remove(conn)
            if closed_idle:
                self._learn(conn.target, _monotonic() - conn.pooled_at)

    def _learn(self, target: Target, age: float) -> None:
        """The upstream closed a connection idle for `age` seconds: its keep-alive timeout, as
        it does not say it (gunicorn keeps one 2 s): later ones are retired before that."""
        if age < LEARN_FROM:
            return
        keep, now = age - IDLE_MARGIN, _monotonic()
        learned = self._learned_idle.get(target)
        if keep < POOL_IDLE_SECONDS and (learned is None or now >= learned[1] or keep <= learned[0]):
            self._learned_idle[target] = (keep, now + LEARNED_FOR)

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()


def _keep_idle(headers: list[tuple[bytes, bytes]]) -> float:
    """How long the connection may idle in the pool, by the response's `Keep-Alive` field."""
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"keep-alive":
            found = _KEEP_ALIVE_TIMEOUT.search(value)
            if found is not None:
                return min(POOL_IDLE_SECONDS, max(int(found[1]) - 1.0, 0.0))
    return POOL_IDLE_SECONDS


def _input_waiting(transport: asyncio.Transport) -> bool:
    """Bytes or an end of stream wait in the socket that the loop has not read yet.

    A connection released and taken again in the same pass of the loop was handed out with the
    upstream's FIN (a server that closes right after a response without `Connection: close`,
    as uvicorn draining for a deploy) already in the kernel: the request written on it got
    `502 upstream_disconnected`. An idle connection has nothing to read, so anything there
    makes it unfit (the strict pool's rule), looked at with one poll of the socket.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _received_while_idle(conn: Connection, transport: asyncio.Transport) -> bool:
    """Bytes came in since the connection was pooled, though none reached the protocol: over
    TLS, part of a record (a stray answer's first half) waits in the TLS layer, which neither
    hands it on nor leaves it in the socket, and the request written next got the stray as its
    answer (outside review). The kernel counts every byte it took in."""
    before = conn.pooled_received
    if before is None:
        return False
    now = bytes_received(transport)
    return now is None or now != before


async def _resolve(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> list[tuple[int, tuple[str, int]]]:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (str(ip), port))]
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise DNSError("resolve") from None
    return [(info[0], (str(info[4][0]), int(info[4][1]))) for info in infos]

"""The proxy port's HTTP/1.1 server: one asyncio Protocol per client connection, on llhttp.

aiohttp's server (the metrics port keeps it) gave every connection a request handler, a
request, a payload reader and writer, a parsed message and two tasks: most of what an open
stream held, and most of the per-request work that was not the proxy's own. The proxy needs a
parsed head, its raw fields, a body it can read as it arrives, and the transport to write on:
that is this module, with the guards server/inbound.py adds to aiohttp's server kept as they were:

- head limits: a request line over MAX_REQUEST_LINE, a field over MAX_FIELD_SIZE or more than
  MAX_HEADERS fields get 431; an HTTP version other than 1.0 and 1.1 gets 505; a head llhttp
  refuses (ambiguous framing included) gets 400.
  The answer comes from `on_parse_error` (nothing of the head is echoed or logged), then the
  connection closes;
- a header timeout: a head must arrive whole within `header_timeout` of its first byte (of the
  connection, for the first request); a keep-alive timeout between requests. Closes for either
  are reported through `on_connection_closed(reason)`. A body read waits at most
  `body_timeout` for the next bytes (nginx's client_body_timeout), and never past the
  request's `deadline`: then it raises BodyTimeout, for the handler to answer;
- one request at a time per connection, pipelined ones in order (a refused head is answered
  after them), at most MAX_QUEUED of them parsed and waiting: the rest of the read that
  brought more waits unparsed; bytes after a request that closes the connection are ignored;
  a client that goes away cancels its handler at once; request bodies stream, reading the socket pausing while
  BODY_HIGH_WATER bytes wait for the handler. Pipelined requests that will not be served (the
  client left, or the connection closes after the one before) are told to `on_unserved`, so
  each still has its record.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools
import structlog

from sse_audit_proxy.server.failures import failure
from sse_audit_proxy.server.inbound import (
    DEFAULT_BODY_TIMEOUT,
    MAX_FIELD_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
)
from sse_audit_proxy.server.tcp import peer_closed, reset, unread
from sse_audit_proxy.sinks.metrics import HEADER_TIMEOUT, KEEPALIVE_TIMEOUT, TOO_MANY_CONNECTIONS

HTTP11 = (1, 1)
# A head is refused (431) once more than this has arrived without its end, whatever the
# per-line limits allow; so are more than this many bytes of chunk-size lines or trailers
# without a body byte (400). The head's fields are held, as httptools hands them over, until
# the head ends: the per-line limits alone allowed 1.6 MB a connection (300 unfinished heads:
# +475 MB for --header-timeout). nginx's default is 32 KiB (large_client_header_buffers 4 8k).
MAX_HEAD_BYTES = 64 << 10
# Request body bytes waiting for the handler before the socket is read no further
# (aiohttp's payload reader paused at the same mark).
BODY_HIGH_WATER = 1 << 16
# Pipelined requests waiting behind the current one before the socket is read no further.
MAX_QUEUED = 8
BACKLOG = 128  # aiohttp's TCPSite default
# After an answer that leaves the client's request partly unread (a refused or too-large body,
# a refused head), the connection closes in stages (RFC 9112 9.6): our side is shut after the
# answer, and what the client still sends is read and discarded for at most LINGER_TIME
# seconds, until a pause of LINGER_PAUSE (nginx's lingering_time and lingering_timeout). A close
# with unread bytes is a reset: node's fetch, still uploading, failed with ECONNRESET instead
# of returning the 413 (four times in five), and an answer still in our socket is dropped.
LINGER_TIME = 30.0
LINGER_PAUSE = 5.0
BUSY_LINGER_TIME = 1.0  # for a connection answered 503 as it came (too many connections)
# A close waits for the client to take what is still buffered for it, for at most this long
# (then the connection is reset, and what the kernel held for it dropped): a client that read
# nothing held its connection, and up to --max-unsent-bytes, for ever after every timeout.
FLUSH_TIME = 30.0
# How often a connection whose reading is paused (a pipelined body or queue at its cap) looks
# whether its client has left: unread, its FIN or reset is not heard, and the stream it left
# ran on upstream until the upstream's next byte (5.5 s in an outside review, not under 1 s).
PEER_WATCH = 0.5

_log = structlog.get_logger("sse_audit_proxy")


# The field names of a head that llhttp refused, read leniently (for the record's trace ID and
# the credentials it must not show: never forwarded). Values are taken whole, as far as the
# line goes: a bearer JWT is kilobytes.
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_MAX_LENIENT_FIELDS = 100


def _lenient_head(piece: bytes) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The target's query and the `name: value` lines of a refused head's bytes, up to its
    blank line (CRLF or LF alone), at most _MAX_LENIENT_FIELDS fields. Line by line with
    `partition`: a regular expression over a hostile line (hundreds of tabs) backtracked for
    seconds (third pass). The query is read for the credentials in it (`?key=`), which the
    trace ID must not show."""
    head = piece[:MAX_HEAD_BYTES]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    if ends:
        head = head[: min(ends)]
    lines = head.split(b"\n")
    # Blank lines before a request line: sliced off once (deleted one at a time, 64 KiB of them
    # cost 75 ms of the event loop a head: a fourth review).
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    lines = lines[first:]
    query = ""
    # A request line, whatever its spacing or version's case (a field name has no space; a
    # head's second read begins with a field): its query is the part after a `?`.
    if lines and not _FIELD_NAME.fullmatch(lines[0].partition(b":")[0]):
        for part in lines.pop(0).split():
            if b"?" in part:
                query = part.partition(b"?")[2].decode("utf-8", "surrogateescape")
                break
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if colon and _FIELD_NAME.fullmatch(name):
            fields.append((name, value.strip(b" \t\r")))
            if len(fields) >= _MAX_LENIENT_FIELDS:
                break
    return query, fields


class BadBody(Exception):
    """The request body's framing broke after its head (a bad chunk): it cannot be read."""


class BodyTimeout(Exception):
    """No request body bytes came for the body timeout, or the request's deadline passed."""


class BodyWaitStopped(Exception):
    """The handler stopped a wait for the body (Request.stop_waiting): it wants no more of it."""


class _HeadTooLarge(Exception):
    pass


class _BadHead(Exception):
    pass


class _VersionNotServed(_BadHead):
    """HTTP/2.0 in a request line: llhttp reads any one-digit major version."""


class _HostNotOne(_BadHead):
    """RFC 9112 3.2: an HTTP/1.1 request without `Host`, or any with two, MUST be answered 400."""

    public_message = "the Host header is missing or repeated: a request needs exactly one (RFC 9112 3.2)"


def _refused_status(exc: BaseException | None) -> int:
    """The answer to a head that cannot be served: 431, 505 (a version llhttp takes, 2.0, or
    refuses, 3.0 and 1.9: as nginx answers either), else 400."""
    if isinstance(exc, _HeadTooLarge):
        return 431
    if isinstance(exc, _VersionNotServed) or (
        isinstance(exc, httptools.HttpParserError) and str(exc) == "Invalid HTTP version"
    ):
        return 505
    return 400


class Headers(dict[str, str]):
    """A request's fields by lower-case name, first value wins; lookups ignore case."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class Answer:
    """What a handler returns: a response for the server to write, or (`written`) word that
    the handler wrote it on the transport itself, and whether the connection may be reused."""

    __slots__ = ("body", "content_type", "headers", "keep_alive", "status", "written")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers: dict[str, str] = headers if headers is not None else {}
        self.keep_alive = True
        self.written = False

    @classmethod
    def relayed(cls, status: int, keep_alive: bool) -> Answer:
        answer = cls(status)
        answer.written = True
        answer.keep_alive = keep_alive
        return answer

    def force_close(self) -> None:
        self.keep_alive = False


Handler = Callable[["Request"], Awaitable[Answer]]
# (a stand-in request: method UNKNOWN, path /, no fields; status: 400, 431 or 505) -> the answer
ParseErrorHandler = Callable[["Request", int, BaseException | None], Answer]
# (a pipelined request no handler will run for, whether its client is gone) -> None
UnservedHandler = Callable[["Request", bool], None]


class Request:
    """One parsed request head, and its body as it arrives."""

    __slots__ = (
        "_body",
        "_buffered",
        "_eof",
        "_error",
        "_headers",
        "_waiter",
        "chunked",
        "conn",
        "content_length",
        "continue_sent",
        "deadline",
        "keep_alive",
        "method",
        "raw_headers",
        "raw_path",
        "version",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: str,
        raw_path: str,
        version: tuple[int, int],
        raw_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.raw_headers = raw_headers
        self.keep_alive = keep_alive
        self._headers: Headers | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.continue_sent = False
        # When (time.monotonic) a body read gives up whatever the body timeout: the handler's
        # deadline for the whole request (--total-timeout).
        self.deadline = math.inf
        self._body: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers()
            has = dict.__contains__  # the key is lower-cased already: not Headers.__contains__
            for name, value in self.raw_headers:
                key = name.decode("latin-1").lower()
                if not has(headers, key):
                    dict.__setitem__(headers, key, value.decode("utf-8", "surrogateescape"))
        return headers

    def forget_fields(self) -> None:
        """The head's fields are no longer needed (a long stream need not hold them)."""
        self.raw_headers = []
        self._headers = None

    @property
    def path(self) -> str:
        """The target's path, percent-decoded (query and fragment cut)."""
        path = self.raw_path
        for sep in ("?", "#"):
            path = path.partition(sep)[0]
        return unquote(path)

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def body_complete(self) -> bool:
        return self._eof and not self._body

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.conn.transport

    def send_continue(self) -> None:
        """Answer `Expect: 100-continue` (RFC 9110 10.1.1) as the body is about to be read.

        Called only once the request is accepted: a refused one gets its final status instead,
        and its connection is closed, so the client never sends the body. Without this a
        client such as curl waits a second before sending a large body anyway.
        """
        if self.continue_sent or self.version < HTTP11 or not self.body_exists:
            return
        if self.headers.get("Expect", "").strip().lower() != "100-continue":
            return
        self.continue_sent = True
        transport = self.conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def readany(self) -> bytes:
        """All of the body that has arrived and was not read yet, in one piece; b"" once it has
        all been read. Raises BodyTimeout when no more comes within the server's body timeout
        (counted from this call: between two reads, as nginx) or by `deadline`.

        In one piece: a chunked body in 1-byte chunks is one queued piece a chunk (43,690 in one
        256 KiB read), and handing them out one at a time (with `list.pop(0)`, each written
        upstream as its own chunk) held the event loop for seconds.
        """
        body = self._body
        while not body:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait()
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        self.conn._body_drained()
        return data

    def drop_arrived_body(self) -> None:
        """A body that has all arrived is dropped unread: the connection can go on to the
        requests pipelined behind it (an unread body closes it)."""
        if self._eof and self._body:
            self._body.clear()
            self._buffered = 0
            self.conn._body_drained()

    def stop_waiting(self) -> None:
        """A wait for the body (in readany) raises BodyWaitStopped now; the body is unchanged."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(BodyWaitStopped())

    async def _wait(self) -> None:
        conn = self.conn
        delay = min(conn._server.body_timeout, self.deadline - time.monotonic())
        self._waiter = conn._loop.create_future()
        timer = conn._loop.call_later(max(delay, 0.0), self._timed_out)
        try:
            await self._waiter
        finally:
            self._waiter = None
            timer.cancel()

    def _timed_out(self) -> None:
        self._fail(BodyTimeout("no request body bytes in time"))

    # Fed by the connection -----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._body.append(data)
        self._buffered += len(data)
        self._wake()

    def _end(self) -> None:
        self._eof = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests and runs the handler for one at a time."""

    __slots__ = (
        "_body_left",
        "_closing",
        "_current",
        "_drain_waiter",
        "_failed_exc",
        "_failed_fields",
        "_failed_head",
        "_failed_query",
        "_fields",
        "_head_bytes",
        "_head_timer",
        "_heads",
        "_held",
        "_held_from",
        "_idle_timer",
        "_in_message",
        "_last_keep_alive",
        "_linger_heard",
        "_linger_until",
        "_loop",
        "_parser",
        "_parsing",
        "_peer_watch",
        "_queue",
        "_reading_paused",
        "_running",
        "_server",
        "_stopped",
        "_task",
        "_url",
        "transport",
        "writing_paused",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        # None between requests while one is handled: an open stream need not hold a parser.
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._in_message = False  # the parser is inside a message (a head or body begun)
        self._last_keep_alive = False  # the last request parsed allows another after it
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # of the head being parsed, so far
        self._parsing: Request | None = None  # whose body is being parsed
        self._body_left = 0  # of its Content-Length: no head can end in these bytes
        self._current: Request | None = None  # being handled
        self._queue: deque[Request] | None = None  # pipelined, waiting their turn
        self._task: asyncio.Task[None] | None = None
        self._running: Request | None = None  # whose handler has taken its first step
        self._heads = 0  # heads parsed: one more means a head arrived whole
        self._held = b""  # a read not parsed from _held_from on, while MAX_QUEUED requests wait
        self._held_from = 0
        self._failed_head: int | None = None  # the status to answer a refused head with
        self._failed_exc: BaseException | None = None  # and why, when it says (_HostNotOne)
        self._failed_fields: list[tuple[bytes, bytes]] = []  # what could be read of that head
        self._failed_query = ""  # ... and of its target's query
        self._stopped = False  # nothing more is parsed (a refused head, an upgrade, a bad body)
        self._closing = False  # close once the requests parsed so far are answered
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._peer_watch: asyncio.TimerHandle | None = None  # while reading is paused
        self.writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._linger_until = 0.0  # lingering (see LINGER_TIME) until then; 0: not lingering
        self._linger_heard = False  # bytes discarded since the last look

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop and asyncio both set TCP_NODELAY on accepted connections (aiohttp set it again).
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        server = self._server
        server._add(self)
        if server.draining:
            self._close()
            return
        if len(server._connections) - server.lingering > server.max_connections:
            # Answered at once, its request unread: past the cap, descriptors ran out, and
            # clients got resets and the metrics port (the liveness probe) no answer at all.
            server.closed(TOO_MANY_CONNECTIONS)
            self._refuse_head(503)
            return
        self._arm_head_timer()  # the first head is timed from the connection (as nginx)

    def data_received(self, data: bytes) -> None:
        if self._stopped or (self._closing and self._current is None):
            self._linger_heard = True  # not read: discarded (only lingering reads go on here)
            return
        idle = self._current is None and self._parsing is None and not self._queue
        if idle and self._head_timer is None:
            self._cancel_idle_timer()  # a head begins: the header timeout governs now
            self._arm_head_timer()
        self._consume(data)

    def _consume(self, data: bytes, start: int = 0) -> None:
        """Parse `data` a piece at a time, each ending just after a blank line or where the
        Content-Length body being read ends; once MAX_QUEUED requests wait, what is left is
        held unparsed (and the socket read no further) until one of them is taken up.

        llhttp parses all it is given, and one read (256 KiB with uvloop) of tiny pipelined
        requests became thousands of queued requests, 2 MB a connection. A head ends only with
        a blank line (llhttp requires CRLF), so a piece completes at most one head.
        """
        heads = self._heads
        size = len(data)
        while start < size and not self._stopped:
            queue = self._queue
            if queue is not None and len(queue) >= MAX_QUEUED:
                self._held, self._held_from = data, start  # no copy: taken up a head at a time
                self._pause_reading()
                break
            if self._body_left > 0:
                end = min(size, start + self._body_left)  # a large body is not searched
            else:
                cut = data.find(b"\r\n\r\n", start)
                end = size if cut < 0 else cut + 4
            # A head, or in a body the bytes since its last body byte (chunk lines, trailers:
            # llhttp sets no limit, and httptools gathers a trailer's value in one growing bytes
            # object).
            self._head_bytes += end - start
            if self._parsing is None and self._head_bytes > MAX_HEAD_BYTES:
                self._keep_refused(bytes(data[start:end]))  # (its trace ID was lost: soak review)
                self._refuse_head(431)
                break
            parser = self._parser
            if parser is None:
                parser = self._parser = httptools.HttpRequestParser(self)
            try:
                parser.feed_data(data if end - start == size else memoryview(data)[start:end])
            except httptools.HttpParserUpgrade as exc:
                start += exc.args[0]
                self._upgraded()
                continue
            except httptools.HttpParserCallbackError as exc:
                self._parse_failed(exc.__context__, heads, data[start:end])
                break
            except httptools.HttpParserError as exc:
                self._parse_failed(exc, heads, data[start:end])
                break
            if self._parsing is not None and self._head_bytes > MAX_HEAD_BYTES:
                self._parse_failed(_HeadTooLarge(), heads)
                break
            start = end
        else:
            if not self._in_message and self._last_keep_alive:
                # Between messages: llhttp keeps nothing of the last one once it ended (unless
                # it asked to close: then the bytes after it must still be refused).
                self._parser = None
        if self._heads != heads:
            self._disarm_head_timer()  # a whole head arrived; the body is not timed here

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._linger_until:
            self._server.lingering -= 1
            self._linger_until = 0.0
        self._stopped = True
        self._disarm_head_timer()
        self._cancel_idle_timer()
        self._stop_peer_watch()
        self._server._remove(self)
        gone = ConnectionResetError("the client closed the connection")
        for request in (self._parsing, self._current):
            if request is not None:
                request._fail(gone)
        self._drop_queue(client_gone=True)
        self._held = b""
        self.resume_writing()  # a drain waiting for the client learns it is gone
        if self._task is not None:
            current = self._current
            if current is not None and self._running is not current:
                # Started but not yet stepped (the close came in the same loop turn as the
                # answer before it): cancelled now, its handler never runs, nor records it.
                self._tell_unserved(current, client_gone=True)
            self._task.cancel()  # the client is gone: its handler stops at once
        self.transport = None

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_drain(self) -> None:
        """A drain waiting for the client returns now (its relay ended: nothing to wait for)."""
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the client has taken what is buffered for it; raises once it is gone."""
        if self.writing_paused and self.transport is not None:
            waiter = self._drain_waiter
            if waiter is None or waiter.done():  # done: cancelled by a timeout of the last wait
                waiter = self._drain_waiter = self._loop.create_future()
            await waiter  # one waiter: only the request's handler drains
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")

    # httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._fields = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_REQUEST_LINE:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_FIELD_SIZE or len(value) > MAX_FIELD_SIZE or len(self._fields) >= MAX_HEADERS:
            raise _HeadTooLarge
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        major, _, minor = parser.get_http_version().partition(".")
        version = (int(major), int(minor))
        if version[0] != 1:
            raise _VersionNotServed  # 505, as nginx answers
        request = Request(
            self,
            parser.get_method().decode("ascii"),
            # A fragment (llhttp takes `#` in a target) is cut, as nginx cuts it: forwarded, it
            # was part of the path to some upstreams (uvicorn's h11, hypercorn, aiohttp, node)
            # and not to others, while the route and the dot-segment test ended at it.
            self._url.partition(b"#")[0].decode("latin-1"),
            version,
            self._fields,
            parser.should_keep_alive(),  # read now: llhttp resets it once the message ends
        )
        self._url = b""
        self._fields = []
        hosts = 0
        for name, value in request.raw_headers:
            lower = name.lower()
            if lower == b"host":
                hosts += 1
            elif lower == b"transfer-encoding":
                if version < HTTP11:
                    raise _BadHead  # chunked framing on HTTP/1.0: ambiguous, refused (as aiohttp)
                if value.strip(b" \t").lower() != b"chunked":
                    # llhttp takes any codings with chunked last: `gzip, chunked` went on with
                    # its gzip dropped (the body forwarded still compressed, said to be plain).
                    # The proxy decodes no other coding: refused, as the upstream's are.
                    raise _BadHead
                request.chunked = True
            elif lower == b"content-length":
                request.content_length = int(value)  # llhttp checked it: digits, one value
        if hosts > 1 or (hosts == 0 and version >= HTTP11):
            raise _HostNotOne  # (it was served: an outside review)
        self._heads += 1
        self._last_keep_alive = request.keep_alive
        self._head_bytes = 0
        self._parsing = request
        self._body_left = request.content_length or 0
        if self._current is None:
            self._start(request)
        else:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(request)
            if len(self._queue) >= MAX_QUEUED:
                self._pause_reading()

    def on_body(self, body: bytes) -> None:
        self._head_bytes = 0
        self._body_left -= len(body)
        request = self._parsing
        if request is None:
            return
        request._feed(body)
        if request._buffered >= BODY_HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        self._in_message = False
        self._head_bytes = 0
        self._body_left = 0
        request, self._parsing = self._parsing, None
        if request is not None:
            request._end()

    # Parse failures ----------------------------------------------------------------------

    def _parse_failed(self, exc: BaseException | None, heads: int, piece: bytes = b"") -> None:
        """`heads`: how many heads had been parsed before this read; `piece`: the bytes the
        parser refused (a head, or part of one), read leniently for the record's trace ID."""
        if self._stopped:
            return  # bytes after the body of an upgrade request: not read (see _upgraded)
        if self._heads and not self._in_message and not self._last_keep_alive:
            # Bytes after a request that closes the connection (llhttp refuses them): not a
            # request, so neither answered nor recorded; the connection closes once it is.
            self._stopped = True
            self._disarm_head_timer()
            return
        request = self._parsing
        if request is not None:
            self._parsing = None
            if self._heads == heads:
                # Broken after a head that came in an earlier read (a bad chunk): its handler
                # may be running; its reader fails, nothing more is parsed.
                self._stopped = True
                self._closing = True
                request._fail(BadBody("the request body is malformed"))
                return
            # Broken in the read that brought its head: no handler has run for it yet, and
            # none will; refused as a malformed request, as aiohttp did.
            if request is self._current:
                assert self._task is not None
                self._task.cancel()  # before its first step: the handler never runs
                self._task = None
                self._current = None
            elif self._queue is not None:
                self._queue.remove(request)
        # A head llhttp had parsed (a bad body in its read) has its fields; else what the
        # refused bytes show.
        if request is not None and request.raw_headers:
            self._failed_query, self._failed_fields = request.raw_path.partition("?")[2], request.raw_headers
        else:
            self._keep_refused(piece)
        self._refuse_head(_refused_status(exc), exc)

    def _keep_refused(self, piece: bytes) -> None:
        """What a refused head's record reads its trace ID from: the bytes refused, read
        leniently, after what llhttp read of the head in earlier reads (its target, fields)."""
        query, fields = _lenient_head(piece)
        if self._url:
            query = self._url.decode("latin-1").partition("?")[2] or query
        self._failed_query, self._failed_fields = query, self._fields + fields

    def _refuse_head(self, status: int, exc: BaseException | None = None) -> None:
        """A head that cannot be served: answered (after any request before it), then closed."""
        self._stopped = True
        self._closing = True
        self._disarm_head_timer()
        self._failed_head = status
        self._failed_exc = exc
        if self._current is None:
            self._answer_failed_head()

    def _answer_failed_head(self) -> None:
        status, exc = self._failed_head, self._failed_exc
        self._failed_head = self._failed_exc = None
        transport = self.transport
        if status is None or transport is None or transport.is_closing():
            return  # no answer can reach the client: nothing to record either
        # The fields of the refused head that could be read, leniently: what the record reads
        # of them is the client's trace ID (it was a random one: the client's own was lost
        # to whoever looked for it) and its credentials (never shown as that ID).
        target = "/?" + self._failed_query if self._failed_query else "/"  # its route: other
        stand_in = Request(self, "UNKNOWN", target, (1, 0), self._failed_fields, False)
        self._failed_query, self._failed_fields = "", []
        try:
            answer = self._server.on_parse_error(stand_in, status, exc)
        except Exception as exc:
            _log.error("parse_error_answer_failed", **failure(exc))
            answer = Answer(500)
        self._write_answer(stand_in, answer, False)
        # The client may still be sending the rest of what was refused; one turned away for
        # want of descriptors is given a second to read its answer, not half a minute.
        self._linger(BUSY_LINGER_TIME if status == 503 else None)

    def _upgraded(self) -> None:
        """llhttp stops at the end of a head asking to switch protocols (and at CONNECT).

        The proxy switches nothing: CONNECT is refused by the handler, and nothing after it is
        read. Any other request is an ordinary one whose `Upgrade` field is hop-by-hop: what
        follows it is parsed as usual, except that a body (llhttp did not frame it) goes
        through a parser told only its framing. After a body of known length the connection
        goes on, as nginx's does (the JDK's HttpClient asks for h2c with every request on
        http://, and each of its POSTs cost a new connection); after a chunked one nothing
        more is read (as with aiohttp).
        """
        request = self._queue[-1] if self._queue else self._current
        if request is None or request.method == "CONNECT":
            self._stopped = True
            self._closing = True
            return
        if request.body_exists:
            request._eof = False
            self._parsing = request
            self._in_message = True  # until the body ends: the parser is kept between reads
            parser = self._parser = httptools.HttpRequestParser(_BodyOnly(self, request.chunked))
            length = self._body_left = request.content_length or 0
            framing = b"Transfer-Encoding: chunked" if request.chunked else b"Content-Length: %d" % length
            # Told now, whether or not any of the body came with the head (it was told only
            # along with body bytes, and the parser was dropped between reads: 400).
            parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % framing)

    # Requests -----------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self._current = request
        self._task = self._loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        self._running = request
        server = self._server
        try:
            answer = await server.handler(request)
        except asyncio.CancelledError:
            self._close()
            raise
        except ConnectionError:
            self._close()  # the response had begun: a cut is all the client gets
            return
        except Exception as exc:
            _log.error("handler_failed", **failure(exc))
            self._close()
            return
        finally:
            self._task = self._running = None  # an idle connection holds no request
        if self.transport is None:
            return
        # Closing (nothing more is parsed) and draining wait for the requests already queued:
        # each gets its answer and its record (a refused head after them once took the place
        # of the next one's answer; a drain closed on them, unanswered and unrecorded).
        keep_alive = (
            answer.keep_alive and request.keep_alive and request.body_complete and not self.last_request
        )
        if not answer.written:
            self._write_answer(request, answer, keep_alive)
        self._current = None
        if not keep_alive:
            if self._failed_head is not None:
                self._answer_failed_head()
            elif request.body_complete:
                self._close()
            else:
                self._linger()  # the client may still be sending the body we left unread
            return
        queue = self._queue
        if queue:
            self._start(queue.popleft())
            self._read_on()
            return
        self._queue = None
        if self._parsing is None:
            self._arm_idle_timer()

    def _write_answer(self, request: Request, answer: Answer, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        version = b"HTTP/1.1" if request.version >= HTTP11 else b"HTTP/1.0"
        try:
            reason = HTTPStatus(answer.status).phrase.encode("ascii")
        except ValueError:
            reason = b""
        lines = [b"%s %d %s\r\n" % (version, answer.status, reason)]
        for name, value in answer.headers.items():
            lines.append(b"%s: %s\r\n" % (_latin1(name), _latin1(value)))
        if answer.content_type is not None:
            lines.append(b"Content-Type: %s\r\n" % answer.content_type.encode("latin-1"))
        lines.append(b"Content-Length: %d\r\nDate: %s\r\n" % (len(answer.body), _http_date()))
        if not keep_alive and request.version >= HTTP11:
            lines.append(b"Connection: close\r\n")
        elif keep_alive and request.version < HTTP11:
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if request.method != "HEAD":
            lines.append(answer.body)
        transport.write(b"".join(lines))

    # Flow, timers, closing ----------------------------------------------------------------

    def _body_drained(self) -> None:
        if self._reading_paused:
            self._read_on()

    def _read_on(self) -> None:
        """Once the queue has room: parse what was held, then read the socket again, unless
        the queue is full again or the body being parsed waits at BODY_HIGH_WATER."""
        queue = self._queue
        if queue is not None and len(queue) >= MAX_QUEUED:
            return
        held = self._held
        if held:
            self._held = b""
            self._consume(held, self._held_from)
            if self._held or self._stopped:
                return
            queue = self._queue
            if queue is not None and len(queue) >= MAX_QUEUED:
                return
        parsing = self._parsing
        if parsing is None or parsing._buffered < BODY_HIGH_WATER:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
            if self._peer_watch is None:
                self._peer_watch = self._loop.call_later(PEER_WATCH, self._watch_peer)

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._stop_peer_watch()

    def _watch_peer(self) -> None:
        self._peer_watch = None
        transport = self.transport
        if transport is None or not self._reading_paused:
            return
        if peer_closed(transport):
            transport.close()  # as an end of file read would (eof_received)
        else:
            self._peer_watch = self._loop.call_later(PEER_WATCH, self._watch_peer)

    def _stop_peer_watch(self) -> None:
        if self._peer_watch is not None:
            self._peer_watch.cancel()
            self._peer_watch = None

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._server.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._current is not None:
            return
        self._server.closed(HEADER_TIMEOUT)
        self._close()  # nothing to answer: there is no request yet (nginx logs a 408)

    def _arm_idle_timer(self) -> None:
        self._idle_timer = self._loop.call_later(self._server.keepalive_timeout, self._idle_timed_out)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        transport = self.transport
        if transport is None or self._current is not None:
            return
        if transport.is_reading() and unread(transport):
            # The next request came as the wait ended (after the loop's poll, before its timers
            # ran): closing now failed it (a front proxy's reused connection: nginx's 502).
            self._arm_idle_timer()
            return
        self._server.closed(KEEPALIVE_TIMEOUT)
        self._close()

    @property
    def last_request(self) -> bool:
        """The request being answered is the last this connection serves: it is closing or the
        server drains, and no request is pipelined behind it."""
        return (self._closing or self._server.draining) and not self._queue

    def close_when_idle(self) -> None:
        """Shutdown: close now if no request is running, else once it is answered."""
        self._closing = True
        if self._current is None:
            self._close()

    def _linger(self, most: float | None = None) -> None:
        """Close once the client has had the chance to read its answer (see LINGER_TIME, or
        `most` seconds): our side is shut (the client sees the answer's end), what it still
        sends is discarded."""
        most = LINGER_TIME if most is None else most
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._stop_serving()
        self._held = b""
        self._drop_queue(client_gone=False)  # nothing more is served here
        if not self._linger_until:
            self._server.lingering += 1
        self._linger_until = self._loop.time() + most
        self._linger_heard = False
        if transport.can_write_eof():
            transport.write_eof()  # after what is buffered: the client's read ends with a FIN
        self._resume_reading()
        self._idle_timer = self._loop.call_later(min(LINGER_PAUSE, most), self._linger_check)

    def _linger_check(self) -> None:
        self._idle_timer = None
        if self.transport is None:
            return
        left = self._linger_until - self._loop.time()
        if self._linger_heard and left > 0:
            self._linger_heard = False
            self._idle_timer = self._loop.call_later(min(LINGER_PAUSE, left), self._linger_check)
            return
        self._close()

    def _stop_serving(self) -> None:
        """Nothing more is parsed or served here; the head and idle timers are off."""
        self._stopped = True
        self._disarm_head_timer()
        self._cancel_idle_timer()

    def _drop_queue(self, *, client_gone: bool) -> None:
        """The pipelined requests waiting here will not be served: each is told, for its record
        (they vanished unrecorded when their client left, the drain cut the one before them, or
        the connection closed after it)."""
        queue, self._queue = self._queue, None
        if not queue:
            return
        for request in queue:
            self._tell_unserved(request, client_gone=client_gone)

    def _tell_unserved(self, request: Request, *, client_gone: bool) -> None:
        try:
            self._server.on_unserved(request, client_gone)
        except Exception as exc:
            _log.error("handler_failed", **failure(exc))

    def _close(self) -> None:
        self._stop_serving()
        self._drop_queue(client_gone=False)
        transport = self.transport
        if transport is not None:
            transport.close()
            if transport.get_write_buffer_size():  # connection_lost cancels it once flushed
                self._idle_timer = self._loop.call_later(FLUSH_TIME, reset, transport)


class _BodyOnly:
    """Parser callbacks for the body of a request whose head asked for an upgrade: the
    synthetic head that frames it is not a request."""

    __slots__ = ("_chunked", "_conn")

    def __init__(self, conn: ClientConnection, chunked: bool) -> None:
        self._conn = conn
        self._chunked = chunked

    def on_body(self, body: bytes) -> None:
        self._conn.on_body(body)

    def on_message_complete(self) -> None:
        conn = self._conn
        conn.on_message_complete()
        if not self._chunked and conn._last_keep_alive:
            # _consume fed this parser no further than the Content-Length: what follows in
            # the read is the next request's, for a parser of requests again (unless this one
            # closes the connection: then nothing after it is a request, as llhttp holds).
            conn._parser = None
            return
        # A chunked body's last piece may run past its end (a `\r\n\r\n` split between
        # reads), and where it ended in the read is not known: stop there.
        conn._stopped = True
        conn._closing = True


def _latin1(text: str) -> bytes:
    return text.encode("latin-1", "replace")


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


class HttpServer:
    """The connections of one listening port, and what they share."""

    def __init__(
        self,
        handler: Handler,
        *,
        on_parse_error: ParseErrorHandler,
        on_unserved: UnservedHandler | None = None,
        header_timeout: float,
        keepalive_timeout: float,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        on_connection_closed: Callable[[str], None] | None = None,
        max_connections: int = 1 << 62,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections  # more are answered 503 as they come
        self.lingering = 0  # connections answered and closing (see LINGER_TIME): not counted
        self.on_parse_error = on_parse_error
        self.on_unserved: UnservedHandler = on_unserved or (lambda _request, _gone: None)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self._on_connection_closed = on_connection_closed
        self.loop = asyncio.get_running_loop()
        self._connections: dict[ClientConnection, None] = {}
        self.draining = False

    @property
    def connections(self) -> list[ClientConnection]:
        return list(self._connections)

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    def _add(self, conn: ClientConnection) -> None:
        self._connections[conn] = None

    def _remove(self, conn: ClientConnection) -> None:
        self._connections.pop(conn, None)

    def closed(self, reason: str) -> None:
        if self._on_connection_closed is not None:
            self._on_connection_closed(reason)

    @property
    def busy(self) -> bool:
        """A request is being handled, or waits its turn, on some connection."""
        return any(
            not conn._stopped and (conn._current is not None or bool(conn._queue))
            for conn in self._connections
        )

    def pre_shutdown(self) -> None:
        """Keep-alive connections close when idle; requests running finish first."""
        self.draining = True
        for conn in list(self._connections):
            conn.close_when_idle()

    async def shutdown(self) -> None:
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)


class ServerRunner:
    """The listening socket of an HttpServer (aiohttp's ServerRunner, for our server)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._listener: asyncio.AbstractServer | None = None

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Start accepting; returns the port really bound (port 0: any free one)."""
        self._listener = await self.server.loop.create_server(
            self.server, host, port, backlog=BACKLOG, reuse_port=reuse_port or None
        )
        sockets = self._listener.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop_accepting(self) -> None:
        if self._listener is not None:
            self._listener.close()  # new connections are refused from now on

    async def cleanup(self) -> None:
        await self.stop_accepting()
        await self.server.shutdown()

"""The reverse proxy: forwards every request and response unchanged, audits event streams.

This is the only module that touches sockets and clocks. For each upstream body chunk it
writes to the client first and feeds the audit second; the audit never blocks or alters
what the client receives, and a failure inside it is logged and ignored.

Every request ends in exactly one audit record, whatever happens to it: refused, upstream
unreachable, cut by either side, aborted at shutdown.
"""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
import structlog
from yarl import URL

from sse_audit_proxy.core.audit import End, StreamAudit, Thresholds, is_json_lines
from sse_audit_proxy.core.credentials import credentials_in, shows_credential
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.form_scan import Scanner, scanner_for
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.core.request_info import (
    REDACTED_MODEL,
    RETRY_HEADER,
    TRACE_HEADER,
    TRACE_HEADERS,
    RequestInfo,
    client_retry,
    trace_id_from,
    traceparent_ids,
)
from sse_audit_proxy.server.access import KeyCheck
from sse_audit_proxy.server.canary import Router
from sse_audit_proxy.server.failures import failure
from sse_audit_proxy.server.http_server import (
    HTTP11,
    Answer,
    BadBody,
    BodyTimeout,
    BodyWaitStopped,
    ClientConnection,
    HttpServer,
    Request,
    ServerRunner,
)
from sse_audit_proxy.server.inbound import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    parse_error_answer,
)
from sse_audit_proxy.server.recording import Recording, Sink, audit_failed
from sse_audit_proxy.server.tcp import reset, unread, unsent
from sse_audit_proxy.server.upstream import (
    BadResponse,
    Connection,
    ConnectTimeout,
    Disconnected,
    DNSError,
    IdleTimeout,
    Pool,
    Target,
    TLSError,
    TotalTimeout,
    Unreachable,
    UpstreamError,
)
from sse_audit_proxy.sinks.evidence import kept_head
from sse_audit_proxy.sinks.redaction import Redactor

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


def shown_model(model: str, credentials: list[str]) -> str:
    """The model name as every sink shows it: not the request's own key pasted into `model`
    (a key of no well-known shape, which model_name cannot tell from a name)."""
    return REDACTED_MODEL if credentials and shows_credential(model, credentials) else model


async def _uncancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end (it is bounded) even if this task is cancelled meanwhile; then
    let the cancellation through."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


def _new_trace_id() -> str:
    return uuid.uuid4().hex


# The host (a pod's name in Kubernetes) named by --instance-header, to find its logs.
INSTANCE = socket.gethostname()
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Recomputed for the upstream hop: Host names the upstream, the body framing is ours, and
# `Expect: 100-continue` is answered by the proxy itself.
REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_TRACE_FIELDS = tuple(name.encode("ascii") for name in TRACE_HEADERS)  # X-Client-Request-Id first
# The trace ID is set by the proxy (the client's, or a fresh one).
RESPONSE_DROP = HOP_BY_HOP | {TRACE_HEADER.lower().encode()}
# A 204 has no body, and a server must not send its Content-Length (RFC 9110 8.6): a hop in
# front of the proxy that framed the answer by one would wait for that many bytes, or read
# the next answer as them.
NO_CONTENT_DROP = RESPONSE_DROP | {b"content-length"}
# What a reason phrase may hold (RFC 9112 4: HTAB, SP, VCHAR, obs-text): one with a control
# character (NUL, ESC) goes out empty, not as the upstream wrote it.
_NOT_REASON = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")

# nginx's convention: the client went away before it was answered.
STATUS_CLIENT_GONE = 499

_log = structlog.get_logger("sse_audit_proxy")


@dataclass(slots=True, frozen=True)
class ProxyConfig:
    upstream: URL
    host: str = "127.0.0.1"
    port: int = 8080
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    total_timeout: float = 3600.0
    max_body_bytes: int = 512 << 20  # OpenAI's largest file upload
    max_unsent_bytes: int = 1 << 20
    # An event stream's client must take some of what waits for it within this long, once more
    # than max_unsent_bytes waits (the upstream is not read meanwhile), or it is cut: nginx's
    # send_timeout; as long as --idle-timeout, the upstream's own allowance.
    send_timeout: float = 300.0
    drain_timeout: float = 30.0
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # a request head must arrive within it
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # between two reads of a request body
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT  # an idle client connection closes
    upstream_ca_file: str | None = None
    insecure_upstream: bool = False
    require_keys: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    reuse_port: bool = False  # --workers: several processes listen on one port (SO_REUSEPORT)
    instance_header: str | None = None  # --instance-header: name the relaying instance (opt-in)
    secret_headers: tuple[str, ...] = ()  # --secret-headers: the request's are credentials too


class _BodyTooLarge(Exception):
    pass


# The start of a request body read before the upstream is contacted (see _hold_start); the
# rest streams through. This and what the server buffers (64 KiB, http_server.BODY_HIGH_WATER)
# plus the JSON scanner's token in progress are all of a request body the proxy holds at a time.
HOLD_BYTES = 64 << 10
# Field names whose secrecy is remembered (a client's names are few; a hostile one's are not).
MAX_NAMES_KNOWN = 1024
# Query parameters looked at for credentials, and the short names that hold one (`?key=`,
# `?key2=`, Azure's `?sig=`, `?pw=`, `?code=` of Azure Functions, `?access=`).
MAX_QUERY_FIELDS = 32
# Feeds (256 KiB of frames each) of a compressed answer's tail decoded before its record, one a
# loop turn: 16 MiB, past any real answer in one read; beyond it, finish()'s few, then
# `compression_bomb`.
CATCH_UP_FEEDS = 64
_CORRELATION = re.compile(rb"(?i)idempotency|session[-_]?id$").search
_QUERY_SECRET = re.compile(r"(?i)(?:key|token|sig|signature|pw|pwd|pass|code|access|auth)\d*$").match


@dataclass(slots=True, frozen=True)
class _Upstream:
    """One upstream base URL: its pool key, path prefix and Host field."""

    target: Target
    base_path: str
    host_header: bytes
    # `/v1/` of a base path ending in `/v1`: a request path that starts with it reaches the
    # upstream as `/v1/v1/...` (see _said_repeated). None: no base path.
    last_segment: str | None = None

    @classmethod
    def of(cls, url: URL, context: ssl.SSLContext) -> _Upstream:
        host = url.raw_host or ""
        shown = f"[{host}]" if ":" in host else host
        base = url.raw_path.rstrip("/")
        return cls(
            Target(url.scheme, host, url.port or 80, context if url.scheme == "https" else None),
            base,
            (shown if url.is_default_port() else f"{shown}:{url.port}").encode(),
            base[base.rfind("/") :] + "/" if base else None,
        )


class _Held:
    """The body's start, read before the upstream is contacted. Not scanned yet: what the scan
    learns is for the record, so it waits until the request is on its way (time to first token)."""

    __slots__ = ("ended", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.ended = False


def _scan(scanner: Scanner, held: list[bytes], ended: bool) -> None:
    if ended:
        scanner.feed_whole(held)  # the whole body: read in one go (read_whole)
        return
    for part in held:
        scanner.feed(part)


def _held_info(scanner: Scanner, held: _Held) -> RequestInfo:
    """What the held start of the body says, for a request whose client went away before
    it was sent on (nothing else will feed the scanner)."""
    _scan(scanner, held.parts, held.ended)
    held.parts = []
    return scanner.info(complete=held.ended)


async def _from_client(request: Request, conn: Connection) -> bytes:
    """The next piece of the request body; raises BodyWaitStopped when the upstream answers
    meanwhile with no use for the rest (a refusal, an answer in full, a close: the answer had
    waited for the client's next bytes, and became the proxy's 408 at the body timeout).

    The upstream's idle clock stops while the client is waited for (its pauses are
    --body-timeout's, not the upstream's silence: an upload that paused longer than
    --idle-timeout was a 504 blamed on the upstream); conn.write() restarts it, and so does
    the body's end."""
    if conn.takes_no_body():
        raise BodyWaitStopped
    conn.stop_idle_clock()
    conn.on_answer = request.stop_waiting
    try:
        return await request.readany()
    finally:
        conn.on_answer = None
        conn.restart_idle_clock()


def error_body(message: str, type_: str, code: str) -> bytes:
    """An OpenAI-shaped error, so SDKs surface the proxy's own failures like upstream ones."""
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


WEBSOCKET_REFUSED = (
    "sse-audit-proxy relays HTTP requests and event streams, not WebSocket connections "
    "(the Realtime API): connect WebSocket clients to the gateway directly"
)


# Fields some frameworks read as the request's real method: never on a browser's preflight.
_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})


def _is_preflight(request: Request) -> bool:
    """A CORS preflight (Fetch: `OPTIONS` with `Access-Control-Request-Method`, no body). A
    browser sends no credentials on it, so `--require-key` answered every one `401`, and no
    browser app could reach a gateway whose own CORS policy allowed it (an outside review). It
    asks the upstream for that policy only: no body, no model call."""
    headers = request.headers
    return (
        request.method == "OPTIONS"
        and not request.body_exists
        and bool(headers.get("access-control-request-method", "").strip())
        and _METHOD_OVERRIDES.isdisjoint(headers)  # no browser sends one on a preflight
    )


def _asks_for_websocket(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """`Upgrade: websocket`, in any of the `Upgrade` fields. Refused in the proxy's own words:
    forwarded without its hop-by-hop `Upgrade`, it reached the upstream as a plain GET, whose
    answer (a 400 or 426, or a 404) told the client nothing of why (the openai SDK's Realtime
    client)."""
    return any(
        len(name) == 7 and name.lower() == b"upgrade" and b"websocket" in value.lower()
        for name, value in raw_headers
    )


def escapes_base(raw_path: str) -> bool:
    """True when the path has dot segments, however written.

    The upstream URL is the base URL plus the raw path, so the destination host can never
    change; but `..` could climb out of a base path such as https://gw/openai/. The path
    ends at the raw target's first `?` or `#` (the server cuts a fragment before the proxy
    sees the target, as nginx does; a `#` is looked for here for any other caller);
    percent-encoding is undone until nothing changes (an upstream or a framework behind it
    may decode twice), and a `?` or `#` that decoding makes is a character of the path, not
    its end (`/%3f/../../admin` is `/admin` to nginx); backslashes count as slashes and
    `;params` are cut from a segment (`..;x` is `..` to Tomcat and Spring).
    """
    cut = min((i for i in (raw_path.find("?"), raw_path.find("#")) if i >= 0), default=len(raw_path))
    path = raw_path[:cut]
    for _ in range(4):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return True  # still encoded after four rounds: nothing legitimate looks like that
    path = path.replace("\\", "/")
    return any(seg.partition(";")[0].strip() in (".", "..") for seg in path.split("/"))


def upstream_ssl(config: ProxyConfig) -> ssl.SSLContext:
    """Verify upstream certificates (system store plus a CA file) unless told not to."""
    context = ssl.create_default_context()
    if config.insecure_upstream:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if config.upstream_ca_file:
        context.load_verify_locations(cafile=config.upstream_ca_file)
    return context


class Proxy:
    def __init__(
        self,
        config: ProxyConfig,
        sinks: Sequence[Sink],
        on_connection_closed: Callable[[str], None] | None = None,
        router: Router | None = None,
    ) -> None:
        """`on_connection_closed(reason)`: a client connection was closed by a timeout."""
        self.config = config
        self._sinks = tuple(sinks)
        self._on_connection_closed = on_connection_closed
        # Which upstream each request goes to (baseline or canary; canary.py).
        self.router = router if router is not None else Router.single(str(config.upstream))
        self._upstreams: dict[str, _Upstream] = {}  # by base URL
        self._ssl = upstream_ssl(config)
        self._pool = Pool(config.connect_timeout)
        self._keys = KeyCheck(config.require_keys)
        self._redactor = Redactor(config.secret_headers)
        self._secret_names: dict[bytes, bool] = {}  # is_secret_name by field name as sent
        self._secret_words: dict[str, bool] = {}  # by cookie or query parameter name
        self._repeats_said: set[str] = set()  # base paths said to be repeated by a request's
        self._runner: ServerRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._draining = False  # refusing new requests, letting the running ones finish
        self._aborting = False  # the drain time is up: what still runs is cut
        self.port = config.port

    async def start(self) -> None:
        cfg = self.config
        server = HttpServer(
            self.handle,
            on_parse_error=self._parse_error,
            on_unserved=self._unserved,
            header_timeout=cfg.header_timeout,
            keepalive_timeout=cfg.keepalive_timeout,
            body_timeout=cfg.body_timeout,
            on_connection_closed=self._on_connection_closed,
            max_connections=max_connections(),
        )
        self._runner = ServerRunner(server)
        self.port = await self._runner.listen(cfg.host, cfg.port, reuse_port=cfg.reuse_port)

    async def reach(self) -> None:
        """Connect to the baseline upstream as a request would, and keep the connection for
        the first one (readiness: server/reach.py). Raises what a request's connect would."""
        target = self._upstream_for(self.router.baseline.base).target
        self._pool.keep(await self._pool.acquire(target))

    def reached(self) -> bool:
        """Whether a request (or readiness) ever connected to the baseline upstream."""
        return self._pool.has_reached(self._upstream_for(self.router.baseline.base).target)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def close(self, drain_timeout: float | None = None) -> int:
        """Stop accepting, let running requests finish for up to `drain_timeout`, cut the rest;
        returns how many were cut."""
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        self._draining = True
        if self._runner is not None:
            await self._runner.stop_accepting()  # new connections are refused
            self._runner.server.pre_shutdown()  # keep-alive connections close when idle
        await self._drain(timeout)
        self._aborting = True
        running = set(self._inflight)
        for task in running:
            task.cancel()
        if running:
            # Each handler writes its record in a finally block as it unwinds.
            await asyncio.wait(running, timeout=5.0)
        if self._runner is not None:
            await self._runner.cleanup()
        self._pool.close()
        return len(running)

    async def _drain(self, timeout: float) -> None:
        """Wait up to `timeout` for the running requests, and for those pipelined behind them
        (each starts as the one before it ends, answered 503 with its record: waiting only for
        the requests running at the start closed on them, unanswered and unrecorded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        server = self._runner.server if self._runner is not None else None
        while (left := deadline - loop.time()) > 0:
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=left)
            elif server is not None and server.busy:
                await asyncio.sleep(0.005)  # the next pipelined request's handler starts
            else:
                return

    # One request ----------------------------------------------------------------------

    def _credentials(self, request: Request) -> list[str]:
        """The request's own credentials: the values of its fields and query parameters with a
        secret's name (`?key=`, `?sig=`, `?pw=`: a URL's key, as Azure's and Google's take)."""
        names = self._secret_names
        fields = []
        for name, value in request.raw_headers:
            secret = names.get(name)
            if secret is None:
                # An idempotency key or a session ID names a request, it opens nothing: the same
                # value as the trace ID is a client's correlation, not a key shown (second review).
                secret = self._redactor.is_secret_name(name.decode("latin-1")) and not _CORRELATION(name)
                if len(names) < MAX_NAMES_KNOWN:
                    names[name] = secret
            if secret:
                fields.append((name.decode("latin-1").lower(), value.decode("utf-8", "surrogateescape")))
        query = request.raw_path.partition("?")[2]
        if query:
            for key, param in parse_qsl(query.partition("#")[0])[:MAX_QUERY_FIELDS]:
                if _QUERY_SECRET(key) or self._secret_name(key):
                    fields.append(("query", param))
        return credentials_in(fields, self._secret_name)

    def _secret_name(self, name: str) -> bool:
        """is_secret_name, remembered (a cookie's or a parameter's name: a client's few)."""
        known = self._secret_words.get(name)
        if known is None:
            known = self._redactor.is_secret_name(name)
            if len(self._secret_words) < MAX_NAMES_KNOWN:
                self._secret_words[name] = known
        return known

    async def handle(self, request: Request) -> Answer:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        started = time.monotonic()
        route = route_for_path(request.path)
        credentials = self._credentials(request)
        trace_id, trace_field = trace_id_from(request.headers, _new_trace_id, credentials)
        side = self.router.pick(request.headers)
        rec = AuditRecord(
            trace_id, route, request.method, "unknown", 0, time.time(), 0.0, 0, None, upstream=side.name
        )
        rec.traceparent = traceparent_ids(request.headers.get("traceparent"))
        rec.client_retry = client_retry(request.headers.get(RETRY_HEADER))
        r = Recording(rec, started, self._sinks)
        r.credentials = credentials
        try:
            return await self._handle(request, r, trace_field, side.base)
        except asyncio.CancelledError:
            if not r.recorded:  # cancelled where no step before had recorded it
                self._gone_before_answer(r, None)
            raise
        except Exception as exc:
            _log.error("proxy_failed", trace_id=trace_id, **failure(exc))
            if r.responded:  # the head went out: a cut is all the client gets, never a second head
                if not r.recorded:
                    rec.error = "proxy_error"
                    r.finish(None, End.ABORTED)
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("response already started") from None
            if r.recorded:  # answer without a second record (nor changing the one sent)
                return Answer(
                    500,
                    error_body("the proxy failed to handle the request", "server_error", "proxy_error"),
                    "application/json",
                )
            return self._refuse(
                r, 500, "the proxy failed to handle the request", "server_error", "proxy_error"
            )
        finally:
            self._inflight.discard(task)

    def _upstream_for(self, base: str) -> _Upstream:
        up = self._upstreams.get(base)
        if up is None:
            up = self._upstreams[base] = _Upstream.of(URL(base), self._ssl)
        return up

    async def _handle(
        self,
        request: Request,
        r: Recording,
        trace_field: str | None,
        base: str,
    ) -> Answer:
        if self._draining:
            # The server closes the connection after it (or after the requests pipelined
            # behind it, each answered so), and never reads an unread body on.
            request.drop_arrived_body()
            return self._refuse(
                r, 503, "the proxy is shutting down; retry", "server_error", "proxy_shutting_down"
            )
        raw_path = request.raw_path
        if request.method == "CONNECT" or not raw_path.startswith("/"):
            return self._refuse(
                r,
                400,
                "only origin-form request targets are proxied",
                "invalid_request_error",
                "unsupported_request_target",
                close=True,
            )
        # A refused request's body is never read (nor waited for, after Expect): close.
        unread = request.body_exists
        if escapes_base(raw_path):
            return self._refuse(
                r,
                400,
                "dot segments are not allowed in the path",
                "invalid_request_error",
                "invalid_path",
                close=unread,
            )
        if self._keys and not self._keys.allows(request.headers) and not _is_preflight(request):
            resp = self._refuse(
                r,
                401,
                "missing or invalid API key for this proxy",
                "invalid_request_error",
                "invalid_api_key",
                close=unread,
            )
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        if _asks_for_websocket(request.raw_headers):
            return self._refuse(
                r, 501, WEBSOCKET_REFUSED, "invalid_request_error", "websocket_not_supported", close=True
            )
        declared = request.content_length
        if declared is not None and declared > self.config.max_body_bytes:
            return self._too_large(r)
        scanner = scanner_for(
            request.headers.get("Content-Type"),
            partial(audit_failed, r.rec.trace_id, "request_scan"),
            dialect_for_route(r.rec.route).target_info(request.raw_path),
        )
        held = _Held()
        # --total-timeout counts from the request's start, the body's arrival included.
        request.deadline = r.started + self.config.total_timeout
        try:
            await self._hold_start(request, held)
        except _BodyTooLarge:
            return self._too_large(r)
        except BodyTimeout:
            return self._body_timed_out(r)
        # A client gone while (or just after) its body was read: what came of the body still
        # names the model and says whether a stream was asked for, so the record is a stream's.
        except asyncio.CancelledError:
            self._gone_before_answer(r, _held_info(scanner, held))
            raise
        except ConnectionError:
            self._gone_before_answer(r, _held_info(scanner, held))
            resp = Answer(STATUS_CLIENT_GONE)
            resp.force_close()
            return resp
        except BadBody:
            return self._refuse(
                r,
                400,
                "the request body could not be read",
                "invalid_request_error",
                "invalid_request_body",
                close=True,
            )
        try:
            up = self._upstream_for(base)
            conn = await self._pool.acquire(up.target)
        except asyncio.CancelledError:
            self._gone_before_answer(r, _held_info(scanner, held))
            raise
        except UpstreamError as exc:
            _scan(scanner, held.parts, held.ended)
            info = scanner.info() if held.ended else await self._scan_rest(request, scanner)
            return self._upstream_failed(r, info, exc)
        used = [conn]  # the retry below may swap in a fresh connection
        try:
            return await self._exchange(request, up, used, scanner, held, r, trace_field)
        finally:
            used[0].release()

    async def _hold_start(self, request: Request, held: _Held) -> None:
        """Read the body's first HOLD_BYTES into `held` before contacting the upstream.

        A small body is then sent in one go, and one over a small cap (the chunked case:
        no Content-Length to refuse it by) never reaches the upstream. `held` is the caller's,
        so what was read is there even when the client goes away during the read.
        """
        if not request.body_exists:
            held.ended = True
            return
        request.send_continue()
        cap = self.config.max_body_bytes
        while held.size < HOLD_BYTES:
            chunk = await request.readany()
            if not chunk:
                held.ended = True
                break
            held.size += len(chunk)
            if held.size > cap:
                raise _BodyTooLarge
            held.parts.append(chunk)

    async def _exchange(
        self,
        request: Request,
        up: _Upstream,
        used: list[Connection],
        scanner: Scanner,
        held: _Held,
        r: Recording,
        trace_field: str | None,
    ) -> Answer:
        cfg = self.config
        rec = r.rec
        conn = used[0]
        # A body that ended within the hold is sent with its length, as a client's would be.
        length = request.content_length
        if length is None and held.ended and request.body_exists:
            length = held.size
        chunked = length is None and not held.ended
        if up.last_segment is not None and request.raw_path.startswith(up.last_segment):
            self._said_repeated(up)
        head = self._request_head(request, up, rec, trace_field, length, chunked)
        unscanned = held.parts  # the join below takes them out of `held`
        if held.ended and not chunked:  # the whole body is here: one write, one segment
            head = b"".join((head, *held.parts))
            held.parts = []
        deadline = r.started + cfg.total_timeout  # monotonic, as the connection's clock
        head_only = request.method == "HEAD"
        conn.start(head, head_only=head_only, idle=cfg.idle_timeout, deadline=deadline)
        _scan(scanner, unscanned, held.ended)  # the request is on its way; the rest as it is sent
        del unscanned
        # An idempotent request sent whole on a pooled connection the upstream closed without
        # answering is sent once more on a new one (RFC 9112 9.3.1), for the close of an idle
        # connection that crossed it; however long the upstream held it, as Go's and
        # Chromium's clients do, so the record says so (`replayed`).
        replay = (
            head if conn.from_pool and held.ended and not chunked and request.method in IDEMPOTENT else None
        )
        del head  # sent: an open stream need not keep the request (up to HOLD_BYTES of body)
        try:
            await self._send_body(request, conn, scanner, held, chunked)
        except _BodyTooLarge:
            conn.close()  # cut the upstream request: it must not see a body end that never came
            return self._too_large(r)
        except BodyTimeout:
            conn.close()  # the same: the upstream never sees a body end
            return self._body_timed_out(r)
        except asyncio.CancelledError:
            conn.close()
            self._gone_before_answer(r, scanner.info(complete=False))
            raise
        except ConnectionError:  # the client went away mid-body
            conn.close()
            self._gone_before_answer(r, scanner.info(complete=False))
            resp = Answer(STATUS_CLIENT_GONE)
            resp.force_close()
            return resp
        except BadBody:
            conn.close()
            return self._refuse(
                r,
                400,
                "the request body could not be read",
                "invalid_request_error",
                "invalid_request_body",
                close=True,
            )
        info = scanner.info(complete=conn.sent)
        if conn.sent:  # the whole request reached the upstream: a client that leaves from here
            # on left the upstream's time, head or not (the canary guard's `gave_up_waiting`)
            rec.request_sent = max(r.started, conn.upload_done_at) - r.started
        scanner.release()  # an open stream keeps no parser state
        rec.model = shown_model(info.model, r.credentials)
        rec.request = info
        try:
            try:
                await conn.response_head()
            except Disconnected:
                if replay is None:
                    raise
                conn.close()
                used[0] = conn = await self._pool.acquire(up.target, fresh=True)
                conn.start(replay, head_only=head_only, idle=cfg.idle_timeout, deadline=deadline)
                conn.sent = rec.replayed = True
                await conn.response_head()
        except asyncio.CancelledError:
            self._gone_before_answer(r, info)
            raise
        except UpstreamError as exc:
            return self._upstream_failed(r, info, exc)
        del replay
        return await self._respond(request, conn, r, info)

    def _said_repeated(self, up: _Upstream) -> None:
        """Once per upstream: clients whose base URL ends in `/v1`, as the openai SDKs' does,
        behind `--upstream https://gw/v1`, send every request to `/v1/v1/...`, which most
        gateways answer 404; nothing at start said why (an outside review). A warning, not a
        refusal: clients whose base URL leaves `/v1` out are served right."""
        if up.base_path in self._repeats_said or len(self._repeats_said) >= 8:
            return
        self._repeats_said.add(up.base_path)
        segment = up.last_segment or ""
        _log.warning(
            "upstream_path_repeated",
            base_path=up.base_path,
            forwarded_as=up.base_path + segment + "...",
            hint=f"leave {segment.rstrip('/')} out of the upstream URL, or out of the clients' base URL",
        )

    def _request_head(
        self,
        request: Request,
        up: _Upstream,
        rec: AuditRecord,
        trace_field: str | None,
        length: int | None,
        chunked: bool,
    ) -> bytes:
        lines = [
            b"%s %s HTTP/1.1\r\nHost: %s\r\n"
            % (
                request.method.encode("ascii"),
                (up.base_path + request.raw_path).encode("latin-1"),
                up.host_header,
            )
        ]
        # The upstream gets the trace ID the record has: always as X-Client-Request-Id (the
        # client's field as it came when it is exactly that), and in X-Request-Id when it came
        # from there. A sanitised ID reached it as sent, an unusable one beside another, and
        # its logs did not join the record.
        trace = rec.trace_id.encode("ascii")
        drop = REQUEST_DROP
        own: list[bytes] = []
        for name in _TRACE_FIELDS if trace_field == TRACE_HEADERS[1] else _TRACE_FIELDS[:1]:
            lower = name.lower()
            if [value for field, value in request.raw_headers if field.lower() == lower] != [trace]:
                drop = drop | {lower}
                own.append(b"%s: %s\r\n" % (name, trace))
        lines.extend(forward_fields(request.raw_headers, drop))
        if length is not None:
            lines.append(b"Content-Length: %d\r\n" % length)
        elif chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        lines.extend(own)
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _send_body(
        self, request: Request, conn: Connection, scanner: Scanner, held: _Held, chunked: bool
    ) -> None:
        """Stream the request body to the upstream as it arrives, scanning it on the way."""
        parts, held.parts = held.parts, []
        for chunk in parts:
            if not await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk):
                return  # the upstream answered (or went) already: stop sending
        del parts
        if not held.ended:
            cap = self.config.max_body_bytes
            size = held.size
            while True:
                try:
                    chunk = await _from_client(request, conn)
                except BodyWaitStopped:
                    return  # the upstream answered (or went): stop sending
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise _BodyTooLarge
                scanner.feed(chunk)
                data = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
                if not await conn.write(data):
                    return
        if chunked and not await conn.write(b"0\r\n\r\n"):
            return
        conn.sent = True

    async def _scan_rest(self, request: Request, scanner: Scanner) -> RequestInfo:
        """The upstream is unreachable: read the body anyway (bounded) to learn the model."""
        try:
            size = 0
            while chunk := await request.readany():
                size += len(chunk)
                if size > self.config.max_body_bytes:
                    return scanner.info(complete=False)
                scanner.feed(chunk)
        except Exception:
            return scanner.info(complete=False)
        return scanner.info()

    def _body_timed_out(self, r: Recording) -> Answer:
        """The client stopped sending its body (nginx's client_body_timeout answers 408 too)."""
        return self._refuse(
            r,
            408,
            "the request body did not arrive in time",
            "invalid_request_error",
            "request_timeout",
            close=True,
        )

    def _too_large(self, r: Recording) -> Answer:
        return self._refuse(
            r,
            413,
            f"request body exceeds {self.config.max_body_bytes} bytes (sse-audit-proxy --max-body-bytes)",
            "invalid_request_error",
            "request_too_large",
            close=True,
        )

    async def _respond(
        self,
        request: Request,
        conn: Connection,
        r: Recording,
        info: RequestInfo,
    ) -> Answer:
        rec, arrived = r.rec, r.started
        rec.status = status = conn.status
        # The upstream's clock starts when it had the whole request: a slow upload is the
        # client's time, not the upstream's TTFB or TTFT. `duration` still counts from the
        # arrival. An upstream that answered before the upload ended had its body left unread
        # until then (the relay starts after the upload), so its times begin there too: timed
        # from its early head, a stream it paced looked withheld (`buffered`).
        sent = max(arrived, conn.upload_done_at)
        rec.request_sent = sent - arrived
        started = sent
        ctype, encoding = _content_type_and_encoding(conn.headers)
        # A HEAD's answer, a 204 or 304 has no body, whatever its head says it would be:
        # no stream to judge (a health check's `HEAD` of a stream's route is no `truncated` one).
        has_body = not (request.method == "HEAD" or status in (204, 304))
        is_sse = has_body and ctype.startswith(b"text/event-stream")
        # A stream was asked for, yet the body is not labelled as one: an error sent as JSON, an
        # ordinary answer, or an event stream under another Content-Type. The audit peeks at a
        # bounded start of the body to tell; the client gets it unchanged. A JSON-lines type
        # (Ollama's native streaming) is a stream too, each line read as a frame, and so it is
        # for a POST that did not say `"stream": true`: Ollama's `/api/chat` and `/api/generate`
        # stream unless told `"stream": false`. A GET's is a download (Anthropic's batch
        # results, a file's content), not a stream.
        json_lines = (
            has_body and not is_sse and is_json_lines(ctype) and (info.stream or request.method == "POST")
        )
        peek = has_body and (info.stream or json_lines) and not is_sse
        audit: StreamAudit | None = None
        if is_sse or peek or (has_body and info.stream and status >= 400):
            try:
                audit = StreamAudit(
                    dialect_for_route(rec.route)(),
                    started,
                    include_usage=info.include_usage,
                    content_encoding=encoding.decode("latin-1"),
                    thresholds=self.config.thresholds,
                    event_stream=is_sse,
                    json_lines=json_lines,
                    arrived_at=arrived,
                )
            except Exception as exc:  # forward first: an audit that cannot start is skipped
                audit_failed(rec.trace_id, "start", exc)
        transport = request.transport
        relay = _Relay(conn, transport, request.conn, rec, audit, is_sse or json_lines, started, self.config)
        client_chunked = has_body and conn.content_length is None and request.version >= HTTP11
        # An upstream that refused the body before it was all read: the client's connection is
        # closed after the answer (the rest of the body is never read), and the head says so.
        keep_alive = (
            request.keep_alive
            and not request.conn.last_request  # as the server decides
            and request.body_complete
            and (client_chunked or conn.content_length is not None or not has_body)
        )
        resp = Answer.relayed(status, keep_alive)
        # Built before the stream opens: a failure here still gets the proxy's own answer.
        head = self._response_head(request, conn, rec, client_chunked, keep_alive)
        end = End.UPSTREAM_EOF
        whole = False  # the upstream's body was all relayed
        if is_sse or audit is not None:  # every audited answer is a stream of the metrics'
            r.stream_started()
        try:
            if transport is None or transport.is_closing():
                raise ConnectionResetError
            transport.write(head)
            r.responded = True
            # For evidence (redacted when shown; the request's own credentials, now).
            rec.response_head = kept_head(head, r.credentials)
            r.credentials = []  # not needed any more: an open stream holds none
            del head
            conn.headers = []  # written: an open stream need not keep them
            request.forget_fields()  # the request's too: its head went upstream long ago
            relay.chunked = client_chunked
            end = await relay.run()
            if end is End.UPSTREAM_EOF:
                whole = True
                audit = relay.audit
                if audit is not None and audit.tail_waiting:
                    # To its end even if the client leaves meanwhile (it has the whole body): cut
                    # short, the verdict was judged without the tail, a cut answer `complete`.
                    await _uncancelled(relay.catch_up(audit))
        except asyncio.CancelledError:
            # A client that leaves once the body is all relayed (the audit catching up) left
            # with the whole answer (a Content-Length body it had read to its end).
            if not whole:
                end = End.ABORTED if self._aborting else End.CLIENT_GONE
            raise
        except ConnectionError:
            if not whole:
                end = End.CLIENT_GONE
        except Exception:
            # The proxy's own failure mid-relay (handle() logs it): the client gets a cut,
            # never a clean-looking end.
            end = End.ABORTED
            rec.error = "proxy_error"
            raise
        finally:
            relayed = end  # how the body ended, whatever the record will say
            if end is not End.UPSTREAM_EOF:
                conn.close()  # stop the gateway generating for nobody; never reused
                resp.force_close()
            audit = relay.audit  # None if it failed mid-stream: switched off, not judged
            if audit is not None and status >= 400:
                end = End.UPSTREAM_STATUS
            r.finish(audit, end)
            # The record is out before the client sees the end (as when aiohttp's write_eof
            # ran after the handler): whoever saw the end can count on the record.
            if transport is not None:
                behind = request.conn.writing_paused
                _end_response(transport, relayed, client_chunked, behind)
        return resp

    def _response_head(
        self,
        request: Request,
        conn: Connection,
        rec: AuditRecord,
        client_chunked: bool,
        keep_alive: bool,
    ) -> bytes:
        """The upstream's head as it came (hop-by-hop fields aside), plus the trace ID."""
        version = b"HTTP/1.1" if request.version >= HTTP11 else b"HTTP/1.0"
        reason = b"" if _NOT_REASON.search(conn.reason) else conn.reason
        lines = [b"%s %d %s\r\n" % (version, conn.status, reason)]
        drop = NO_CONTENT_DROP if conn.status == 204 else RESPONSE_DROP
        lines.extend(forward_fields(conn.headers, drop, chunked=conn.chunked))
        lines.append(b"X-Client-Request-Id: %s\r\n" % rec.trace_id.encode("ascii"))
        if self.config.instance_header:
            lines.append(
                b"%s: %s\r\n"
                % (self.config.instance_header.encode("ascii"), INSTANCE.encode("ascii", "replace"))
            )
        if client_chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not keep_alive and request.version >= HTTP11:
            lines.append(b"Connection: close\r\n")
        elif keep_alive and request.version < HTTP11:
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _gone_before_answer(self, r: Recording, info: RequestInfo | None) -> None:
        """The handler was cancelled before a response began: client gone, or shutdown."""
        rec = r.rec
        end = End.ABORTED if self._aborting else End.CLIENT_GONE
        rec.status = STATUS_CLIENT_GONE
        rec.error = "shutdown" if end is End.ABORTED else "client_disconnect"
        audit = None
        if info is not None:
            rec.model = shown_model(info.model, r.credentials)
            rec.request = info
            if info.stream:
                audit = StreamAudit(dialect_for_route(rec.route)(), r.started)
        r.finish(audit, end)

    # The proxy's own answers ----------------------------------------------------------

    def _upstream_failed(self, r: Recording, info: RequestInfo, exc: Exception) -> Answer:
        # The exception's own text goes nowhere: the record carries our code for it.
        status, code, message = upstream_error(exc, self.config)
        r.rec.model = shown_model(info.model, r.credentials)
        r.rec.request = info  # evidence shows the request's shape: the upstream never saw it
        audit = None
        if info.stream:
            audit = StreamAudit(dialect_for_route(r.rec.route)(), r.started)
        end = _END_BY_CODE.get(code, End.UPSTREAM_STATUS)
        return self._answer(r, status, message, "upstream_error", code, audit, end)

    def _refuse(
        self,
        r: Recording,
        status: int,
        message: str,
        type_: str,
        code: str,
        *,
        close: bool = False,
    ) -> Answer:
        resp = self._answer(r, status, message, type_, code, None, End.UPSTREAM_STATUS)
        if close:
            # Do not read (or wait for) the rest of a request we refused.
            resp.force_close()
        return resp

    def _answer(
        self,
        r: Recording,
        status: int,
        message: str,
        type_: str,
        code: str,
        audit: StreamAudit | None,
        end: End,
    ) -> Answer:
        rec = r.rec
        rec.status = status
        rec.error = code
        body = error_body(message, type_, code)
        resp = Answer(status, body, "application/json", {TRACE_HEADER: rec.trace_id})
        if self.config.instance_header:
            resp.headers[self.config.instance_header] = INSTANCE
        rec.bytes = len(body)
        r.finish(audit, end)
        return resp

    def _unhandled(self, request: Request) -> Recording:
        """The record of a request no handler ran for, from its head alone."""
        trace_id, _ = trace_id_from(request.headers, _new_trace_id, self._credentials(request))
        rec = AuditRecord(
            trace_id,
            route_for_path(request.path),
            request.method,
            "unknown",
            0,
            time.time(),
            0.0,
            0,
            None,
            upstream=self.router.baseline.name,
        )
        return Recording(rec, time.monotonic(), self._sinks)

    def _unserved(self, request: Request, client_gone: bool) -> None:
        """A pipelined request that will not be served: recorded, never sent upstream."""
        r = self._unhandled(request)
        rec = r.rec
        rec.status = STATUS_CLIENT_GONE  # no answer went out (nginx's 499)
        if self._aborting:
            rec.error, end = "shutdown", End.ABORTED
        elif client_gone:
            rec.error, end = "client_disconnect", End.CLIENT_GONE
        else:  # the connection closed after the request before it (refused, or broken)
            rec.error, end = "not_served", End.ABORTED
        r.finish(None, end)

    def _parse_error(self, request: Request, status: int, exc: BaseException | None) -> Answer:
        """A request head the server refused (bad or oversized): answer and record it."""
        r = self._unhandled(request)
        trace_id = r.rec.trace_id
        status, code, msg = parse_error_answer(status, exc)
        if status >= 500 and status not in (503, 505):  # too many connections, HTTP/2.0: no fault
            _log.error("proxy_failed", trace_id=trace_id, exception=type(exc).__name__)
        # The parser's message can quote a header line (an API key): it is neither logged
        # nor echoed; the record carries our code for it.
        return self._refuse(
            r,
            status,
            msg,
            "server_error" if status >= 500 else "invalid_request_error",
            code,
            close=True,
        )


# Descriptors kept for what is not a relayed stream: the metrics port and its scrapes, the
# log's pipe, the listeners, a worker's pipes.
FD_RESERVE = 64


def max_connections() -> int:
    """Client connections the open-files limit allows, each with its upstream connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 62
    return max(1, (soft - FD_RESERVE) // 2)


_END_BY_CODE = {
    "upstream_connect_timeout": End.CONNECT_TIMEOUT,
    "upstream_idle_timeout": End.IDLE_TIMEOUT,
    "upstream_timeout": End.TOTAL_TIMEOUT,
}


def upstream_error(exc: BaseException, config: ProxyConfig) -> tuple[int, str, str]:
    """(status, code, message) for a failure to get a response from the upstream."""
    if isinstance(exc, ConnectTimeout):
        return (504, exc.code, f"upstream connect timed out after {config.connect_timeout:g} s")
    if isinstance(exc, IdleTimeout):
        return 504, exc.code, f"upstream sent nothing for {config.idle_timeout:g} s"
    if isinstance(exc, TotalTimeout):
        return 504, exc.code, f"upstream did not answer within {config.total_timeout:g} s"
    if isinstance(exc, TLSError):
        return 502, exc.code, f"TLS with upstream failed: {exc.reason}"
    if isinstance(exc, DNSError):
        return 502, exc.code, "could not resolve the upstream host"
    if isinstance(exc, Unreachable):
        why = exc.why
        return 502, exc.code, "could not connect to upstream" + (f": {why}" if why else "")
    if isinstance(exc, Disconnected):
        return 502, exc.code, "upstream closed the connection without a response"
    if isinstance(exc, BadResponse):
        return 502, exc.code, "upstream sent a response the proxy cannot read"
    return 502, "upstream_error", "the request to the upstream failed"


def forward_fields(
    fields: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes], *, chunked: bool = False
) -> list[bytes]:
    """Header lines to pass on, bytes exactly as received (no decoding, nothing lost).

    Hop-by-hop fields are dropped (RFC 9110 7.6.1), and so is every field that any
    `Connection` line names: all such lines count, not only the first. Except Content-Length:
    it frames what the client gets (RFC 9110 forbids naming it; an upstream that did left the
    client a keep-alive response with no framing at all, hanging until its keep-alive timeout).
    """
    named: set[bytes] = set()
    for name, value in fields:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    named.discard(b"content-length")
    out: list[bytes] = []
    for name, value in fields:
        lower = name.lower()
        if lower in drop or lower in named or (chunked and lower == b"content-length"):
            continue
        out.append(b"%s: %s\r\n" % (name, value))
    return out


def _content_type_and_encoding(fields: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    ctype = encoding = b""
    for name, value in fields:
        lower = name.lower()
        if lower == b"content-type" and not ctype:
            ctype = value.strip().lower()
        elif lower == b"content-encoding" and not encoding:
            encoding = value.strip()
    return ctype, encoding


# How often a client the relay waits for is looked at for progress (its unsent bytes shrank).
PROGRESS_CHECK = 1.0
# The chunk-size lines of the chunks most frames fit in, made once (about 100 KB).
_HEADS = 2048
_CHUNK_HEADS = tuple(b"%x\r\n" % size for size in range(_HEADS))


class _Relay:
    """The body sink (`body`): each upstream read is written to the client, then fed to the audit.

    Called from the upstream connection's `data_received`, so relaying a frame costs no task
    switch. The upstream is read at its own pace (the audit times the upstream) while less than
    `max_unsent_bytes` waits for the client; past that it is not read until the client takes
    some (backpressure, as without a proxy). An event stream's client that takes nothing for
    `send_timeout` then is cut (`slow_client`). Cut at once as it used to be, a client reading
    an image stream (frames of several MiB: one write passes 1 MiB) or reading its streams one
    after another lost them, where straight to the gateway it got them.
    """

    __slots__ = (
        "_blocked",
        "_loop",
        "_send_timeout",
        "_upstream_quiet",
        "_wake",
        "audit",
        "chunked",
        "conn",
        "protocol",
        "rec",
        "started",
        "transport",
    )

    def __init__(
        self,
        conn: Connection,
        transport: asyncio.Transport | None,
        protocol: ClientConnection,
        rec: AuditRecord,
        audit: StreamAudit | None,
        streamed: bool,
        started: float,
        config: ProxyConfig,
    ) -> None:
        self.started = started
        self.conn = conn
        self.transport = transport
        self.protocol = protocol
        self.rec = rec
        self.audit = audit
        self.chunked = False
        self._blocked = False
        self._wake: asyncio.Future[None] | None = None
        self._upstream_quiet = 0.0  # during a hold: when no upstream byte was seen waiting
        self._loop = asyncio.get_running_loop()
        # Streams (event streams, JSON lines) only; other bodies: --total-timeout.
        self._send_timeout = config.send_timeout if streamed else None
        if transport is not None:
            transport.set_write_buffer_limits(high=config.max_unsent_bytes)

    def body(self, data: bytes, t: float) -> End | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return End.CLIENT_GONE
        size = len(data)
        if self.chunked:  # data.join: the chunk in one allocation and copy, no format to parse
            transport.write(data.join((_CHUNK_HEADS[size] if size < _HEADS else b"%x\r\n" % size, b"\r\n")))
        else:
            transport.write(data)  # forward first
        rec = self.rec
        if rec.ttfb is None:
            rec.ttfb = t - self.started
        rec.bytes += size  # on the record at once: a cut relay keeps its count
        audit = self.audit
        if audit is not None:
            try:
                audit.feed(data, t)  # then look
            except Exception as exc:
                self.audit = None  # off for the rest of this stream; forwarding goes on as it was
                audit_failed(rec.trace_id, "feed", exc)
        if self.protocol.writing_paused:  # more than max_unsent_bytes wait for the client
            self.conn.pause_reading()
            self._blocked = True
            self._poke()
        return None

    async def catch_up(self, audit: StreamAudit) -> None:
        """A compressed answer's tail the audit has not decoded yet (it came in the last read,
        `audit.tail_waiting`): a feed's worth a loop turn, CATCH_UP_FEEDS at most (past them,
        `compression_bomb`), before the record and the client's end. Decoded in one go by
        finish(), it held every other stream up for up to a second. The time it takes is not
        the upstream's."""
        began = self._loop.time()
        try:
            for _ in range(CATCH_UP_FEEDS):
                if not audit.catch_up():
                    return
                await asyncio.sleep(0)
            audit.give_up_tail()
        except Exception as exc:
            self.audit = None  # off, as for a failed feed: the stream is judged without it
            audit_failed(self.rec.trace_id, "feed", exc)
        finally:
            if self.audit is not None:
                self.audit.decoded_late(self._loop.time() - began)

    def _ended(self, _: object) -> None:
        self._poke()
        self.protocol.wake_drain()

    def _poke(self, _: object = None) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def run(self) -> End:
        # A bound method, not the instance with a __call__: Python calls it in place (a per-frame
        # call through tp_call cost about 1.4 % of a relayed frame's instructions, callgrind).
        end = self.conn.relay(self.body, self.started)
        end.add_done_callback(self._ended)
        while not end.done():
            if self._blocked:
                self._blocked = False
                began = self._upstream_quiet = self._loop.time()
                try:
                    took = await self._client_took_some(end)
                finally:
                    if self.audit is not None:
                        now = self._loop.time()
                        waited = now - self._upstream_quiet if self._upstream_waits() else 0.0
                        self.audit.client_held(now - began, upstream_waited=waited)
                if end.done():
                    break
                if took:
                    self.conn.resume_reading()
                else:
                    self.conn.stop_relay(End.SLOW_CLIENT)  # ends the relay
                continue
            self._wake = self._loop.create_future()
            await self._wake
        return end.result()

    async def _client_took_some(self, end: asyncio.Future[End]) -> bool:
        """Wait until the client has taken enough of what waits for it; False if it took none
        of it for `send_timeout`. Raises if it is gone; returns when the relay ends meanwhile.
        Only a client making no progress at all is cut: one drain to the low-water mark can
        take a reading client longer than any timeout (a slow link, a large frame)."""
        timeout = self._send_timeout
        if timeout is None:  # not an event stream: --total-timeout bounds it
            await self.protocol.drain()
            return True
        transport = self.transport
        if transport is None:
            return True
        waiting = unsent(transport)
        deadline = self._loop.time() + timeout
        while (wait := deadline - self._loop.time()) > 0:
            try:
                async with asyncio.timeout(min(wait, PROGRESS_CHECK)):
                    await self.protocol.drain()
                return True
            except TimeoutError:
                if end.done() or transport.is_closing():
                    return True
            left = unsent(transport)
            if left < waiting:  # it took some: the clock starts again
                waiting, deadline = left, self._loop.time() + timeout
            if not self._upstream_waits():
                self._upstream_quiet = self._loop.time()
        return False

    def _upstream_waits(self) -> bool:
        """Bytes from the upstream wait to be read: it sent while held (see client_held)."""
        up = self.conn.transport
        return up is not None and unread(up) > 0


def _end_response(transport: asyncio.Transport, end: End, chunked: bool, behind: bool) -> None:
    """`behind`: more than the write buffer's high-water mark waits for the client."""
    if end is End.UPSTREAM_EOF:
        if chunked and not transport.is_closing():
            transport.write(b"0\r\n\r\n")
        # Not kept alive: the server closes it as the handler returns, in stages when the
        # client may still be sending the body (http_server.LINGER_TIME).
    elif end is End.SLOW_CLIENT or behind:
        # Drop what the client would not take: a close waits for it to be read, and a client
        # that reads nothing held its connection for ever after a timeout ended its request.
        reset(transport)  # what the kernel holds for it goes too
    else:
        # Close without the final chunk so the client sees a cut, not a clean end.
        transport.close()

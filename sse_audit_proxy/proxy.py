"""The reverse proxy: forwards every request and response unchanged, audits event streams.

This is the only module that touches sockets and clocks. For each upstream body chunk it
writes to the client first and feeds the audit second; the audit never blocks or alters
what the client receives, and a failure inside it is logged and ignored.

Every request ends in exactly one audit record, whatever happens to it: refused, upstream
unreachable, cut by either side, aborted at shutdown.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import aiohttp
import orjson
import structlog
from aiohttp import hdrs, http_exceptions, web
from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .access import KeyCheck
from .audit import End, StreamAudit, Thresholds
from .canary import Router
from .dialects import dialect_for_route, route_for_path
from .inbound import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    GuardedServer,
    expect_continue,
    parse_error_answer,
)
from .listen import listen
from .record import AuditRecord
from .request_info import RequestInfo, trace_id_from

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Recomputed for the upstream hop: Host names the upstream; we send the body we read whole.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}
_RESPONSE_DROP = HOP_BY_HOP
TRACE_HEADER = "X-Client-Request-Id"
# The host (a pod's name in Kubernetes) named by --instance-header, to find its logs.
INSTANCE = socket.gethostname()

# nginx's convention: the client went away before it was answered.
STATUS_CLIENT_GONE = 499

_log = structlog.get_logger("sse_audit_proxy")


class Sink(Protocol):
    """Something that hangs off the end of a stream: metrics, logs, recent-streams buffer."""

    def stream_started(self, route: str, upstream: str) -> None: ...
    def stream_ended(self, route: str, upstream: str) -> None: ...
    def record(self, rec: AuditRecord) -> None: ...


@dataclass(slots=True, frozen=True)
class ProxyConfig:
    upstream: URL
    host: str = "127.0.0.1"
    port: int = 8080
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    total_timeout: float = 3600.0
    max_body_bytes: int = 32 << 20
    max_unsent_bytes: int = 1 << 20
    drain_timeout: float = 30.0
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # a request head must arrive within it
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT  # an idle client connection closes
    upstream_ca_file: str | None = None
    insecure_upstream: bool = False
    require_keys: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    reuse_port: bool = False  # --workers: several processes listen on one port (SO_REUSEPORT)
    instance_header: str | None = None  # --instance-header: name the relaying instance (opt-in)


class _BodyTooLarge(Exception):
    pass


class _Relayed(web.StreamResponse):
    """The upstream's response: its head carries the upstream's fields, and none that aiohttp
    would add on its own (`Server` reveals versions; `Date`, `Content-Type` were not sent)."""

    _ADDED = (hdrs.SERVER, hdrs.DATE, hdrs.CONTENT_TYPE)

    async def _prepare_headers(self) -> None:
        supplied = [name for name in self._ADDED if name in self.headers]
        await super()._prepare_headers()
        for name in self._ADDED:
            if name not in supplied:
                self.headers.popall(name, None)


class _Answer(web.Response):
    """The proxy's own answer: no `Server` field naming our software and its version."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


def _forward_headers(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    named = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in drop and lower not in named:
            out.add(name, value)
    return out


def error_body(message: str, type_: str, code: str) -> bytes:
    """An OpenAI-shaped error, so SDKs surface the proxy's own failures like upstream ones."""
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


def escapes_base(raw_path: str) -> bool:
    """True when the path has dot segments, however written.

    The upstream URL is the base URL plus the raw path, so the destination host can never
    change; but `..` could climb out of a base path such as https://gw/openai/. The path
    ends at the first `?` or `#` (a fragment is dropped on the way up, so `/v1/..#x` reaches
    the upstream as `/v1/..`); percent-encoding is undone until nothing changes (an upstream
    or a framework behind it may decode twice); backslashes count as slashes and `;params`
    are cut from a segment (`..;x` is `..` to Tomcat and Spring).
    """
    path = raw_path
    for _ in range(4):
        cut = min((i for i in (path.find("?"), path.find("#")) if i >= 0), default=len(path))
        path = path[:cut]
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return True  # still encoded after four rounds: nothing legitimate looks like that
    path = path.replace("\\", "/")
    return any(seg.partition(";")[0].strip() in (".", "..") for seg in path.split("/"))


def upstream_ssl(config: ProxyConfig) -> ssl.SSLContext | bool:
    """Verify upstream certificates (system store plus a CA file) unless told not to."""
    if config.insecure_upstream:
        return False
    context = ssl.create_default_context()
    if config.upstream_ca_file:
        context.load_verify_locations(cafile=config.upstream_ca_file)
    return context


class Proxy:
    def __init__(self, config: ProxyConfig, sinks: Sequence[Sink],
                 on_connection_closed: Callable[[str], None] | None = None,
                 router: Router | None = None) -> None:
        """`on_connection_closed(reason)`: a client connection was closed by a timeout."""
        self.config = config
        self._sinks = tuple(sinks)
        self._on_connection_closed = on_connection_closed
        # Which upstream each request goes to (baseline or canary; canary.py).
        self.router = router if router is not None else Router.single(str(config.upstream))
        self._keys = KeyCheck(config.require_keys)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._draining = False  # refusing new requests, letting the running ones finish
        self._aborting = False  # the drain time is up: what still runs is cut
        self.port = config.port

    async def start(self) -> None:
        cfg = self.config
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=upstream_ssl(cfg))
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # forward the upstream's bytes exactly as encoded
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies to another
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(
                total=cfg.total_timeout, sock_connect=cfg.connect_timeout,
                sock_read=cfg.idle_timeout,
            ),
            trust_env=False,
        )
        server = GuardedServer(
            self.handle,
            on_parse_error=self._parse_error,
            header_timeout=cfg.header_timeout,
            keepalive_timeout=cfg.keepalive_timeout,
            on_connection_closed=self._on_connection_closed,
            handler_cancellation=True,  # a vanished client cancels its handler at once
            auto_decompress=False,
            access_log=None,
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        self.port = await listen(self._runner, cfg.host, cfg.port, reuse_port=cfg.reuse_port)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def close(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let running requests finish for up to `drain_timeout`, cut the rest."""
        timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
        self._draining = True
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()  # closes the listening socket: new connections are refused
            if self._runner.server is not None:
                self._runner.server.pre_shutdown()  # keep-alive connections close when idle
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout)
        self._aborting = True
        running = set(self._inflight)
        for task in running:
            task.cancel()
        if running:
            # Each handler writes its record in a finally block as it unwinds.
            await asyncio.wait(running, timeout=5.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # One request ----------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        started = time.monotonic()
        route = route_for_path(request.path)
        trace_id, from_client = trace_id_from(request.headers)
        side = self.router.pick(request.headers)
        rec = AuditRecord(trace_id, route, request.method, "unknown", 0, time.time(), 0.0, 0,
                          None, upstream=side.name)
        try:
            return await self._handle(request, rec, started, from_client, side.base)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("proxy_failed", trace_id=trace_id)
            if rec.duration:  # already recorded: answer without a second record
                return _Answer(status=500, content_type="application/json", body=error_body(
                    "the proxy failed to handle the request", "server_error", "proxy_error"))
            return self._refuse(rec, started, 500, "the proxy failed to handle the request",
                                "server_error", "proxy_error")
        finally:
            self._inflight.discard(task)

    async def _handle(
        self, request: web.BaseRequest, rec: AuditRecord, started: float, from_client: bool,
        base: str,
    ) -> web.StreamResponse:
        if self._draining:
            return self._refuse(rec, started, 503, "the proxy is shutting down; retry",
                                "server_error", "proxy_shutting_down", close=True)
        raw_path = request.raw_path
        if request.method == "CONNECT" or not raw_path.startswith("/"):
            return self._refuse(rec, started, 400, "only origin-form request targets are "
                                "proxied", "invalid_request_error", "unsupported_request_target",
                                close=True)
        # A refused request's body is never read (nor waited for, after Expect): close.
        unread = request.body_exists
        if escapes_base(raw_path):
            return self._refuse(rec, started, 400, "dot segments are not allowed in the path",
                                "invalid_request_error", "invalid_path", close=unread)
        if self._keys and not self._keys.allows(request.headers):
            resp = self._refuse(rec, started, 401, "missing or invalid API key for this proxy",
                                "invalid_request_error", "invalid_api_key", close=unread)
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        try:
            body = await self._read_body(request)
        except _BodyTooLarge:
            return self._refuse(rec, started, 413, "request body exceeds "
                                f"{self.config.max_body_bytes} bytes", "invalid_request_error",
                                "request_too_large", close=True)
        except asyncio.CancelledError:
            self._gone_before_answer(rec, None, started)
            raise
        except ConnectionError:  # the client went away mid-body
            self._gone_before_answer(rec, None, started)
            resp = _Answer(status=STATUS_CLIENT_GONE)
            resp.force_close()
            return resp
        except (aiohttp.ClientError, http_exceptions.HttpProcessingError):
            return self._refuse(rec, started, 400, "the request body could not be read",
                                "invalid_request_error", "invalid_request_body", close=True)
        info = RequestInfo.from_body(body)
        rec.model = info.model
        rec.request = info
        headers = _forward_headers(request.headers, _REQUEST_DROP)
        if not from_client:
            headers[TRACE_HEADER] = rec.trace_id
        url = URL(base + raw_path, encoded=True)

        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except asyncio.CancelledError:
            self._gone_before_answer(rec, info, started)
            raise
        except Exception as exc:
            return self._upstream_failed(rec, info, started, exc)
        del body, headers  # sent: an open stream should not hold its prompt (RSS per stream)
        try:
            return await self._respond(request, upstream, rec, info, started)
        finally:
            upstream.release()

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        cap = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise _BodyTooLarge
        await expect_continue(request)
        parts: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > cap:
                raise _BodyTooLarge
            parts.append(chunk)
        return b"".join(parts)

    async def _respond(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        rec: AuditRecord,
        info: RequestInfo,
        started: float,
    ) -> web.StreamResponse:
        rec.status = upstream.status
        rec.response_headers = upstream.headers
        is_sse = upstream.headers.get("Content-Type", "").lower().startswith("text/event-stream")
        # A stream was asked for, yet the body is not labelled as one: an error sent as JSON, an
        # ordinary answer, or an event stream under another Content-Type. The audit peeks at a
        # bounded start of the body to tell; the client gets it unchanged.
        peek = info.stream and not is_sse
        audit: StreamAudit | None = None
        if is_sse or peek or (info.stream and upstream.status >= 400):
            audit = StreamAudit(
                dialect_for_route(rec.route)(),
                started,
                include_usage=info.include_usage,
                content_encoding=upstream.headers.get("Content-Encoding", ""),
                thresholds=self.config.thresholds,
                event_stream=is_sse,
            )
        headers = _forward_headers(upstream.headers, _RESPONSE_DROP)
        headers[TRACE_HEADER] = rec.trace_id
        if self.config.instance_header:
            headers[self.config.instance_header] = INSTANCE
        resp = _Relayed(status=upstream.status, reason=upstream.reason, headers=headers)
        if self._draining:
            resp.force_close()  # let the client reconnect to an instance that stays
        end = End.UPSTREAM_EOF
        if is_sse:
            self._notify_started(rec.route, rec.upstream)
        try:
            writer = await resp.prepare(request)
            if is_sse and isinstance(writer, StreamWriter) and request.transport is not None:
                end = await self._relay_stream(upstream, writer, request.transport, audit, rec,
                                               started)
            else:
                end = await self._relay(upstream, resp, rec, started, audit if peek else None)
        except asyncio.CancelledError:
            end = End.ABORTED if self._aborting else End.CLIENT_GONE
            raise
        except ConnectionError:
            end = End.CLIENT_GONE
        finally:
            if end is not End.UPSTREAM_EOF:
                upstream.close()  # stop the gateway generating for nobody
            transport = request.transport
            if transport is not None:
                if end is End.SLOW_CLIENT:
                    transport.abort()  # drop what the client would not take
                elif end in (End.UPSTREAM_BROKEN, End.IDLE_TIMEOUT, End.TOTAL_TIMEOUT):
                    # Close without the final chunk so the client sees a cut, not a clean end.
                    transport.close()
            if is_sse:
                self._notify_ended(rec.route, rec.upstream)
            if audit is not None and upstream.status >= 400:
                end = End.UPSTREAM_STATUS
            if audit is None and end is not End.UPSTREAM_EOF:
                rec.error = end.value
            self._finish(rec, audit, end, started)
        return resp

    async def _relay(
        self, upstream: aiohttp.ClientResponse, resp: web.StreamResponse, rec: AuditRecord,
        started: float, peek: StreamAudit | None = None,
    ) -> End:
        """Any other body: plain backpressure (the upstream is read as fast as the client takes).

        `peek`: a stream was asked for and this is none; the audit looks at the body's start
        for an error document sent in its place.
        """
        read = upstream.content.readany
        write = resp.write
        while True:
            try:
                chunk = await read()
            except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
                return _read_failed(exc)
            if not chunk:
                return End.UPSTREAM_EOF
            try:
                await write(chunk)
            except ConnectionError:
                return End.CLIENT_GONE
            if rec.ttfb is None:
                rec.ttfb = time.monotonic() - started
            rec.bytes += len(chunk)  # on the record at once: a cancelled relay keeps its count
            if peek is not None:
                try:
                    peek.feed(chunk, time.monotonic())  # then look
                except Exception:
                    _log.exception("audit_failed")
                    peek = None

    async def _relay_stream(
        self,
        upstream: aiohttp.ClientResponse,
        writer: StreamWriter,
        transport: asyncio.Transport,
        audit: StreamAudit | None,
        rec: AuditRecord,
        started: float,
    ) -> End:
        """An event stream: read at the upstream's pace, so the audit times the upstream.

        The client's socket may hold back up to `max_unsent_bytes` (its transport's high-water
        mark); past that the client is not keeping up, and the stream is aborted rather than
        buffered without bound or left to stall the upstream indefinitely.
        """
        transport.set_write_buffer_limits(high=self.config.max_unsent_bytes)
        read = upstream.content.readany
        write = writer.write
        protocol = writer.protocol
        clock = time.monotonic
        while True:
            try:
                chunk = await read()
            except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
                return _read_failed(exc)
            if not chunk:
                return End.UPSTREAM_EOF
            t = clock()
            try:
                await write(chunk, drain=False)  # forward first; never wait on the client
            except ConnectionError:
                return End.CLIENT_GONE
            if rec.ttfb is None:
                rec.ttfb = t - started
            rec.bytes += len(chunk)  # on the record at once: a cancelled relay keeps its count
            if audit is not None:
                try:
                    audit.feed(chunk, t)  # then look
                except Exception:
                    _log.exception("audit_failed")
                    audit = None
            if protocol.writing_paused:  # more than max_unsent_bytes wait for the client
                return End.SLOW_CLIENT

    def _finish(
        self, rec: AuditRecord, audit: StreamAudit | None, end: End, started: float
    ) -> None:
        now = time.monotonic()
        rec.duration = now - started
        if audit is not None:
            rec.stream = audit.finish(now, end)
        self._emit(rec)

    def _emit(self, rec: AuditRecord) -> None:
        for sink in self._sinks:
            try:
                sink.record(rec)
            except Exception:
                _log.exception("sink_failed", sink=type(sink).__name__)

    def _notify_started(self, route: str, upstream: str) -> None:
        for sink in self._sinks:
            sink.stream_started(route, upstream)

    def _notify_ended(self, route: str, upstream: str) -> None:
        for sink in self._sinks:
            sink.stream_ended(route, upstream)

    def _gone_before_answer(self, rec: AuditRecord, info: RequestInfo | None,
                            started: float) -> None:
        """The handler was cancelled before a response began: client gone, or shutdown."""
        end = End.ABORTED if self._aborting else End.CLIENT_GONE
        rec.status = STATUS_CLIENT_GONE
        rec.error = "shutdown" if end is End.ABORTED else "client_disconnect"
        audit = None
        if info is not None:
            rec.model = info.model
            if info.stream:
                audit = StreamAudit(dialect_for_route(rec.route)(), started)
        self._finish(rec, audit, end, started)

    # The proxy's own answers ----------------------------------------------------------

    def _upstream_failed(
        self, rec: AuditRecord, info: RequestInfo, started: float, exc: Exception
    ) -> web.StreamResponse:
        # The exception's own text goes nowhere: the record carries our code for it.
        status, code, message = upstream_error(exc, self.config)
        audit = None
        if info.stream:
            audit = StreamAudit(dialect_for_route(rec.route)(), started)
        end = _END_BY_CODE.get(code, End.UPSTREAM_STATUS)
        return self._answer(rec, started, status, message, "upstream_error", code, audit, end)

    def _refuse(
        self, rec: AuditRecord, started: float, status: int, message: str, type_: str,
        code: str, *, close: bool = False,
    ) -> web.Response:
        resp = self._answer(rec, started, status, message, type_, code, None,
                            End.UPSTREAM_STATUS)
        if close:
            # Do not read (or wait for) the rest of a request we refused.
            resp.force_close()
        return resp

    def _answer(
        self, rec: AuditRecord, started: float, status: int, message: str, type_: str,
        code: str, audit: StreamAudit | None, end: End,
    ) -> web.Response:
        rec.status = status
        rec.error = code
        body = error_body(message, type_, code)
        resp = _Answer(status=status, body=body, content_type="application/json",
                            headers={TRACE_HEADER: rec.trace_id})
        if self.config.instance_header:
            resp.headers[self.config.instance_header] = INSTANCE
        rec.bytes = len(body)
        self._finish(rec, audit, end, started)
        return resp

    def _parse_error(self, request: web.BaseRequest, status: int,
                     exc: BaseException | None) -> web.Response:
        """A request aiohttp's parser refused (bad or oversized head): answer and record it."""
        started = time.monotonic()
        trace_id, _ = trace_id_from(request.headers)
        rec = AuditRecord(trace_id, route_for_path(request.path), request.method, "unknown",
                          0, time.time(), 0.0, 0, None, upstream=self.router.baseline.name)
        status, code, msg = parse_error_answer(status, exc)
        if status >= 500:
            _log.error("proxy_failed", trace_id=trace_id, exception=type(exc).__name__)
        # The parser's message can quote a header line (an API key): it is neither logged
        # nor echoed; the record carries our code for it.
        return self._refuse(rec, started, status, msg,
                            "server_error" if status >= 500 else "invalid_request_error", code,
                            close=True)


def _read_failed(exc: BaseException) -> End:
    """Why reading the upstream's body stopped."""
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return End.IDLE_TIMEOUT  # sock_read: nothing for idle_timeout
    if isinstance(exc, TimeoutError):
        return End.TOTAL_TIMEOUT
    return End.UPSTREAM_BROKEN


_END_BY_CODE = {
    "upstream_connect_timeout": End.CONNECT_TIMEOUT,
    "upstream_idle_timeout": End.IDLE_TIMEOUT,
    "upstream_timeout": End.TOTAL_TIMEOUT,
}


def upstream_error(exc: BaseException, config: ProxyConfig) -> tuple[int, str, str]:
    """(status, code, message) for a failure to get a response from the upstream."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return (504, "upstream_connect_timeout",
                f"upstream connect timed out after {config.connect_timeout:g} s")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return (504, "upstream_idle_timeout",
                f"upstream sent nothing for {config.idle_timeout:g} s")
    if isinstance(exc, asyncio.TimeoutError):
        return (504, "upstream_timeout",
                f"upstream did not answer within {config.total_timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", "") or "certificate error"
        return 502, "upstream_tls_error", f"TLS with upstream failed: {reason}"
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        reason = getattr(getattr(exc, "os_error", exc), "reason", None) or "handshake failed"
        return 502, "upstream_tls_error", f"TLS with upstream failed: {reason}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return 502, "upstream_dns_error", "could not resolve the upstream host"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return 502, "upstream_unreachable", "could not connect to upstream"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return 502, "upstream_disconnected", "upstream closed the connection without a response"
    if isinstance(exc, aiohttp.ClientResponseError):
        return 502, "upstream_bad_response", "upstream sent a response the proxy cannot read"
    return 502, "upstream_error", "the request to the upstream failed"

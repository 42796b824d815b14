"""The probe's HTTP side: one request, its raw bytes with arrival times, and their audit.

Each body chunk is stamped with its arrival time (seconds after the request was sent) and fed
to the same pure StreamAudit the proxy uses, and to a decoder whose events the API readers
turn into evidence. The raw chunks are kept (bounded) for `--save-raw`.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from sse_audit_proxy import __version__
from sse_audit_proxy.cli.options import KEY_HEADER_DEFAULT, key_header_value
from sse_audit_proxy.core.audit import End, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.inflate import Inflater, wants_inflater
from sse_audit_proxy.core.request_info import TRACE_HEADER
from sse_audit_proxy.core.sse import Event, SSEDecoder
from sse_audit_proxy.sinks.redaction import Redactor
from sse_audit_proxy.tools.probe.facts import Answer, StreamFacts, TimedEvent

MAX_CAPTURE_BYTES = 16 << 20  # raw bytes kept per request; the probe's answers are small
# Decoded bytes of one answer the probe reads at most: its requests ask for a few tokens, so an
# answer past this is a route gone wrong (an endless body, megabyte frames, a compression
# bomb), and reading on would only grow the probe. The answer fails as too large.
MAX_ANSWER_BYTES = 16 << 20
MAX_EVENTS = 100_000
# A request's whole time, in --timeout units: --timeout bounds each silence (and, on a stream,
# the time without a data frame); this bounds a body that trickles on without end.
TOTAL_TIMEOUTS = 10
MAX_PIECE = 1 << 20  # largest piece the inflater hands back at once
REDACTED = "[redacted]"
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "apim-request-id", "cf-ray")


@dataclass(slots=True)
class Exchange:
    """One request the probe sent and everything it saw of the answer."""

    trace_id: str
    api: str
    purpose: str  # control, stream, tool-call, tool-result, no-tool, cancel, after-cancel
    url: str
    request_headers: dict[str, str]  # as sent, the Authorization value redacted
    request_body: dict[str, Any]
    stream: bool
    started_at: float = 0.0  # wall clock, seconds since the epoch
    status: int = 0  # 0: no response
    reason: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    headers_at: float | None = None  # seconds from sending to the response head
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # raw, as received
    raw_bytes: int = 0
    capture_cut: bool = False  # more than MAX_CAPTURE_BYTES: the rest was not kept
    events: list[TimedEvent] = field(default_factory=list)
    keepalives: int = 0
    empty_events: int = 0  # frames the openai SDK reads as events with empty data (SSEDecoder)
    unterminated: bool = False
    end: End = End.UPSTREAM_EOF
    error: str | None = None  # what went wrong on the wire, in words
    duration: float = 0.0
    result: StreamResult | None = None  # the audit, for streamed requests
    doc: Any = None  # the JSON body of a non-streamed answer or an error
    body_text: str = ""  # the start of a body that is not JSON
    cancelled_after: int | None = None  # data frames read before the probe aborted
    too_large: bool = False  # more than MAX_ANSWER_BYTES: the probe stopped reading
    proxy_record: dict[str, Any] | None = None  # what the proxy in front recorded, if asked
    facts: StreamFacts | None = None  # filled by the runner from `events`
    answer: Answer | None = None  # filled by the runner from `doc`

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.response_headers if k.lower() == lower), None)

    @property
    def content_type(self) -> str:
        return self.header("Content-Type") or ""

    @property
    def is_sse(self) -> bool:
        return self.content_type.lower().startswith("text/event-stream")

    @property
    def request_id(self) -> str | None:
        for name in REQUEST_ID_HEADERS:
            value = self.header(name)
            if value:
                return value
        return None

    @property
    def trace_echoed(self) -> bool:
        return self.header(TRACE_HEADER) == self.trace_id

    @property
    def refused(self) -> bool:
        """No usable answer: nothing came back, a redirect, an HTTP error, or one too large
        to read."""
        return self.status == 0 or self.status >= 300 or self.too_large

    def error_message(self) -> str:
        """The message of an error body: OpenAI's `error.message`, a plain `error` or `message`,
        FastAPI's `detail` (a string, or a list of `{msg}`: transformers serve, LiteLLM's own
        404s, which were shown as no message at all); else the start of the body."""
        doc = self.doc
        if isinstance(doc, dict):
            error, detail = doc.get("error"), doc.get("detail")
            if isinstance(error, dict):
                error = error.get("message")
            if isinstance(detail, list):
                detail = "; ".join(
                    d["msg"] for d in detail if isinstance(d, dict) and isinstance(d.get("msg"), str)
                )
            for message in (error, detail, doc.get("message")):
                if isinstance(message, str) and message.strip():
                    return message[:300]
        if doc is not None and not self.body_text:
            return orjson.dumps(doc)[:300].decode("utf-8", "replace")
        return self.body_text[:300]


_SENSITIVE = ("authorization", "key", "token", "secret", "cookie", "password")
HEADERS = Redactor()  # how evidence shows headers: the report shows them alike


def is_secret_header(name: str) -> bool:
    """A `-H` header whose value the report never shows: what evidence blanks, and any name
    with a secret's word in it (`-H` values are the user's own credentials more often than not)."""
    return HEADERS.is_secret_name(name) or any(s in name.lower() for s in _SENSITIVE)


def shown_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as the report shows them: values of secret-looking names hidden."""
    return {name: (REDACTED if is_secret_header(name) else value) for name, value in headers}


def shown_response_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A response's headers as the report shows them: secret-named ones blanked (`Set-Cookie`),
    credentials in the others scrubbed. Every other value is shown, unlike in the proxy's
    evidence (evidence.shown_value): these answer the probe's own requests, whose prompts are
    its own, and a cutover's report needs what the gateway sent."""
    return {name: HEADERS.header(name, value) for name, value in headers}


@dataclass(slots=True, frozen=True)
class Sender:
    """What every request of one run carries."""

    session: aiohttp.ClientSession
    headers: tuple[tuple[str, str], ...]  # -H extras
    api_key: str | None
    timeout: float
    key_header: str = KEY_HEADER_DEFAULT  # --api-key-header

    def request_headers(self, trace_id: str, stream: bool) -> tuple[dict[str, str], dict[str, str]]:
        """(sent, shown): the headers to send, and the same with the key redacted."""
        sent = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "Accept-Encoding": "gzip, deflate",  # what the openai SDK sends
            "User-Agent": f"sse-audit-proxy-probe/{__version__}",
            TRACE_HEADER: trace_id,
            **dict(self.headers),
        }
        shown = shown_headers(sent.items())
        if self.api_key:
            sent[self.key_header] = key_header_value(self.key_header, self.api_key)
            shown[self.key_header] = key_header_value(self.key_header, REDACTED)
        return sent, shown


async def send(
    sender: Sender,
    url: URL,
    body: dict[str, Any],
    *,
    trace_id: str,
    api: str,
    purpose: str,
    cancel_after: int | None = None,
    is_terminal: Callable[[Event], bool] | None = None,
) -> Exchange:
    """POST `body`; for a stream, read it to the end (or abort it after `cancel_after` data
    frames unless its end has already come)."""
    stream = body.get("stream") is True
    sent, shown = sender.request_headers(trace_id, stream)
    ex = Exchange(trace_id, api, purpose, str(url), shown, body, stream, started_at=time.time())
    clock = time.monotonic
    started = clock()
    audit: StreamAudit | None = None
    decoder = SSEDecoder()
    try:
        # A redirect is the route's answer: followed, it would send the key to another host
        # (aiohttp drops only Authorization) and report that host's answer as the route's.
        async with sender.session.post(
            url, data=orjson.dumps(body), headers=sent, allow_redirects=False
        ) as resp:
            ex.headers_at = clock() - started
            ex.status, ex.reason = resp.status, resp.reason or ""
            ex.response_headers = [(str(k), str(v)) for k, v in resp.headers.items()]
            encoding = resp.headers.get("Content-Encoding", "")
            if stream:
                dialect = dialect_for_route(route_for_path(url.path))
                audit = StreamAudit(
                    dialect(), 0.0, include_usage=_asks_usage(body), content_encoding=encoding
                )
            inflater = Inflater(encoding, MAX_PIECE, feed_max_out=None) if wants_inflater(encoding) else None
            await _read(
                resp,
                ex,
                audit,
                decoder,
                inflater,
                _Clock(clock, started, sender.timeout),
                cancel_after if ex.is_sse else None,
                is_terminal,
            )
    except TimeoutError:
        ex.end, ex.error = End.IDLE_TIMEOUT, f"no response within {sender.timeout:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        ex.end, ex.error = End.UPSTREAM_BROKEN, describe(exc)
    ex.duration = clock() - started
    if ex.status >= 400:
        ex.end = End.UPSTREAM_STATUS
    if audit is not None:
        ex.result = audit.finish(ex.duration, ex.end)
    ex.unterminated = decoder.close() and ex.end is not End.CLIENT_GONE
    ex.keepalives = decoder.comments
    ex.empty_events = decoder.empty_events
    return ex


@dataclass(slots=True)
class _Clock:
    """A request's time: seconds since it was sent, and its bounds."""

    now: Callable[[], float]
    started: float
    timeout: float  # --timeout
    decoded: int = 0  # answer bytes read (after decompression)
    last_event: float | None = None  # when the last data frame came (None: the head's time)

    def since(self) -> float:
        return self.now() - self.started


async def _read(
    resp: aiohttp.ClientResponse,
    ex: Exchange,
    audit: StreamAudit | None,
    decoder: SSEDecoder,
    inflate: Inflater | None,
    clock: _Clock,
    cancel_after: int | None,
    is_terminal: Callable[[Event], bool] | None,
) -> None:
    plain: list[bytes] = []
    try:
        while chunk := await resp.content.readany():
            t = clock.since()
            _keep(ex, chunk, t)
            if audit is not None:
                audit.feed(chunk, t)
            for data in (chunk,) if inflate is None else inflate.feed(chunk):
                if _take(ex, clock, data, t, plain, decoder, cancel_after, is_terminal):
                    resp.close()  # the abort: the connection goes, as when a user closes a tab
                    return
            if inflate is not None and inflate.failed:
                ex.end, ex.error = End.UPSTREAM_BROKEN, "the compressed body could not be decoded"
                return
            if inflate is not None and inflate.bomb:
                ex.too_large, ex.end = True, End.ABORTED
                ex.error = (
                    "the compressed answer expands absurdly (a compression bomb), and the "
                    "probe stopped decoding it"
                )
                resp.close()
                return
            if _overdue(ex, clock, t):
                resp.close()
                return
    except TimeoutError:
        ex.end, ex.error = End.IDLE_TIMEOUT, "no byte for the --timeout while reading the body"
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError) as exc:
        ex.end, ex.error = End.UPSTREAM_BROKEN, describe(exc)
    if not ex.is_sse:
        _parse_body(ex, b"".join(plain))


def _take(
    ex: Exchange,
    clock: _Clock,
    data: bytes,
    t: float,
    plain: list[bytes],
    decoder: SSEDecoder,
    cancel_after: int | None,
    is_terminal: Callable[[Event], bool] | None,
) -> bool:
    """One decoded piece of the body; True when the probe stops reading here."""
    clock.decoded += len(data)
    if clock.decoded > MAX_ANSWER_BYTES:
        ex.too_large, ex.end = True, End.ABORTED
        ex.error = f"the answer passed {MAX_ANSWER_BYTES >> 20} MiB and the probe stopped reading it"
        return True
    if not ex.is_sse:
        plain.append(data)
        return False
    events = decoder.feed(data)
    if events:
        clock.last_event = t
    if len(ex.events) < MAX_EVENTS:
        ex.events.extend((t, e) for e in events)
    if (
        cancel_after is not None
        and len(ex.events) >= cancel_after
        and not (is_terminal is not None and any(is_terminal(e) for _, e in ex.events))
    ):
        ex.cancelled_after = len(ex.events)
        ex.end = End.CLIENT_GONE
        return True
    return False


def _overdue(ex: Exchange, clock: _Clock, t: float) -> bool:
    """Bytes keep coming but no answer does, for TOTAL_TIMEOUTS of --timeout: only keep-alive
    comments on a stream (a model that hangs behind a gateway that keeps the connection alive),
    or a body still arriving. Keep-alives are progress for --timeout itself: a reasoning model
    may think for minutes before its first token, its gateway sending comments meanwhile
    (OpenRouter's `: OPENROUTER PROCESSING`), and such a route is healthy."""
    limit = TOTAL_TIMEOUTS * clock.timeout
    if t <= limit:
        return False
    since_event = t - (clock.last_event if clock.last_event is not None else ex.headers_at or 0.0)
    if ex.is_sse and since_event > clock.timeout:
        ex.end = End.IDLE_TIMEOUT
        ex.error = (
            f"only keep-alive comments for {since_event:.0f} s, no data frame, and the answer "
            f"not done after {limit:g} s ({TOTAL_TIMEOUTS} x --timeout): the model behind the "
            "route may hang"
        )
    else:
        ex.end = End.TOTAL_TIMEOUT
        ex.error = f"the answer was still arriving after {limit:g} s ({TOTAL_TIMEOUTS} x --timeout)"
    return True


def _keep(ex: Exchange, chunk: bytes, t: float) -> None:
    ex.raw_bytes += len(chunk)
    if ex.raw_bytes <= MAX_CAPTURE_BYTES:
        ex.chunks.append((t, chunk))
    else:
        ex.capture_cut = True


def _parse_body(ex: Exchange, body: bytes) -> None:
    try:
        ex.doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        ex.body_text = body[:300].decode("utf-8", "replace")


def _asks_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def describe(exc: BaseException) -> str:
    """A transport failure in words an operator can act on."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without an answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the connection broke in the middle of the body"
    if isinstance(exc, ConnectionResetError) or getattr(exc, "errno", None) == errno.ECONNRESET:
        return "the connection was reset"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


async def lookup_record(
    session: aiohttp.ClientSession, metrics_url: URL, trace_id: str, wait: float = 5.0
) -> tuple[dict[str, Any] | None, str | None]:
    """The proxy's audit record of `trace_id` from its metrics port (`/streams/{trace_id}`),
    polled for up to `wait` seconds: the proxy writes it once it has noticed the end."""
    url = URL(
        str(metrics_url).rstrip("/").removesuffix("/metrics") + "/streams/" + quote(trace_id, safe=""),
        encoded=True,
    )
    deadline = time.monotonic() + wait
    while True:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == 200:
                    doc = await resp.json()
                    streams = doc.get("streams") if isinstance(doc, dict) else None
                    if streams:
                        return streams[0], None
                elif resp.status != 404:
                    return None, f"{url} answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return None, f"{url}: {describe(exc)}"
        if time.monotonic() >= deadline:
            return None, None
        await asyncio.sleep(0.05)

"""A stream's evidence: everything an on-call engineer needs about one stream, in one JSON file.

Built from an audit record when someone asks (`GET /streams/{trace_id}/evidence`) or when a
stream ends badly (the `stream_evidence` log event). Self-contained and bounded, and never
holding text: the request's shape (route, model, stream options, sizes of lists), the
response's status and headers (secrets redacted), the frame skeletons, the timeline, the
verdict and its reasons. `sse-audit-proxy evidence-to-case` turns it into a conformance case.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import orjson

from sse_audit_proxy.core.dialects import DIALECTS
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.core.skeleton import split_entry
from sse_audit_proxy.core.timeline import kind_name
from sse_audit_proxy.sinks.redaction import REDACTED, Redactor

EVIDENCE_VERSION = 1
MAX_HEADERS = 64
MAX_HEADER_VALUE = 512
KEEP_HEAD_BYTES = 8 << 10  # a real response head is a few hundred bytes
_REDACTED = REDACTED.encode()
# The request path of each route, for a replay (the record keeps the route, not the path):
# under `/v1` but for the native APIs with paths of their own (Ollama's `/api/...`, on whose
# server `/v1/...` is the OpenAI-compatible API, and Cohere's `/v2/chat`).
ROUTE_PATHS = {
    d.route: d.evidence_path
    or (
        d.path_suffixes[0]
        if d.path_suffixes[0].startswith(("/v1/", "/v2/", "/api/"))
        else "/v1" + d.path_suffixes[0]
    )
    for d in DIALECTS
}
OTHER_PATH = "/v1/other"


# Fields whose values evidence shows (scrubbed of credentials, as every value shown is): how the
# answer was framed, cached and buffered, which hop answered, the IDs a vendor asks for, rate
# limits and timings. Any other field's value is upstream text of any kind (a debug field
# echoing the prompt, a private key): shown as its length, `<N>`, as a frame's strings are.
_SHOWN = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "cache-control",
        "pragma",
        "expires",
        "vary",
        "via",
        "server",
        "date",
        "age",
        "retry-after",
        "x-accel-buffering",
        "x-content-type-options",
        "strict-transport-security",
        "alt-svc",
        "traceparent",
        "tracestate",
        "x-served-by",
        "x-cache",
        "x-should-retry",
        "cf-ray",
        "cf-mitigated",  # a Cloudflare challenge answered in the gateway's place
        "www-authenticate",
        "server-timing",
        "openai-organization",
        "openai-project",
        "openai-model",
        "azureml-model-session",
        "x-ms-rai-invoked",
        "x-ms-deployment-name",
        "x-amz-cf-pop",
        "x-litellm-model-id",
        "x-litellm-model-group",
        "x-litellm-call-id",
        "x-litellm-attempted-retries",
        "x-litellm-attempted-fallbacks",
    }
)
# The kinds of field that vendors name alike: IDs, rate limits, timings, versions, regions, costs,
# counts, caches and error types (`x-request-id`, `apim-request-id`, `x-amzn-requestid`,
# `x-ratelimit-remaining-tokens`, `openai-processing-ms`, `x-envoy-upstream-service-time`,
# `x-ms-region`, `x-litellm-response-cost`, `x-amzn-bedrock-input-token-count`, `x-vercel-cache`,
# `cf-cache-status`, `x-amzn-errortype`, `x-ms-error-code`), under any vendor's prefix.
_SHOWN_KIND = re.compile(
    r"(?:^|-)(?:request-?id|trace-?id|correlation-?id|call-?id|cf-id|vercel-id)$|ratelimit"
    r"|-(?:ms|latency|time|duration|version|region|cost|spend|count|retries|cache|cache-status)$"
    r"|error-?(?:type|code)$"
).search
_ECHOED = "llm_provider-"  # LiteLLM's copy of its upstream's fields
# Fields that are a URL: shown without its parameters, query or fragment (a redirect may carry
# a prompt or a session ID).
_URLS = frozenset({"location", "content-location"})
_URL_END = re.compile(r"[;?#]")
_LENGTH = re.compile(r"<\d+>")
# What a credential or a word is made of: a value cut short loses its last one whole, so that
# no part of a secret (whose shape no longer matches once cut) is left at the cut.
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=%"


def shown_value(name: str) -> bool:
    """Whether evidence shows a response field's value (scrubbed), not only its length."""
    lower = name.lower().removeprefix(_ECHOED)
    return lower in _SHOWN or lower in _URLS or _SHOWN_KIND(lower) is not None


def _cut(text: str) -> str:
    """`text` cut to MAX_HEADER_VALUE characters, then to the end of its last whole word; its
    length, `<N>`, when it has none there (a single long token)."""
    if len(text) <= MAX_HEADER_VALUE:
        return text
    return text[:MAX_HEADER_VALUE].rstrip(_TOKEN_CHARS).rstrip() or f"<{len(text)}>"


def _fields(head: bytes) -> list[tuple[str, str]]:
    """The head's fields as evidence shows them: the first MAX_HEADERS, each value of a field
    evidence does not show as its length (`<N>`), names and shown values cut (_cut),
    KEEP_HEAD_BYTES of them in all."""
    out: list[tuple[str, str]] = []
    room = KEEP_HEAD_BYTES
    for line in head.split(b"\r\n")[1:]:  # the status line first
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            continue
        name = _cut(name.strip())
        value = value.strip()
        if shown_value(name):
            value = _cut(value)
        elif not _LENGTH.fullmatch(value):  # a kept head's (kept_head) already is
            value = f"<{len(value)}>"
        room -= len(name) + len(value)
        if len(out) >= MAX_HEADERS or room < 0:
            break
        out.append((name, value))
    return out


def _shown(name: str, value: str, redactor: Redactor) -> str:
    """A field's value from _fields as evidence shows it."""
    if redactor.is_secret_name(name):
        return REDACTED
    if not shown_value(name):
        return value  # its length already
    if name.lower().removeprefix(_ECHOED) in _URLS and (end := _URL_END.search(value)) is not None:
        value = f"{value[: end.start() + 1]}<{len(value) - end.start() - 1}>"
    return redactor.header(name, value)


def redacted_headers(head: bytes | None, redactor: Redactor) -> list[list[str]]:
    """The head's `[name, value]` pairs, in order: the values of the fields evidence shows
    (shown_value) with secret headers blanked and secrets scrubbed (Redactor.header), others as
    their length; names scrubbed too (a field may be named with a key); bounded in count and
    length."""
    if not head:
        return []
    return [
        [printable(redactor.scrub_name(name)), printable(_shown(name, value, redactor))]
        for name, value in _fields(head)
    ]


# Controls a header's bytes may hold (decoded as latin-1): C0, DEL and C1. Written raw into a
# JSON line or a page they reach a terminal that shows the log (U+009B is CSI, a C1 escape).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CUT_ESCAPE = re.compile(r"\\(?:x[0-9a-f]?)?$")


def printable(text: str) -> str:
    """`text` with each control character written `\\xNN`, cut to MAX_HEADER_VALUE again
    (and never inside an escape)."""
    if _CONTROL.search(text) is None:
        return text
    out = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return out if len(out) <= MAX_HEADER_VALUE else _CUT_ESCAPE.sub("", out[:MAX_HEADER_VALUE])


def kept_head(head: bytes, credentials: Iterable[str] = ()) -> bytes:
    """What a record keeps of a response head for its evidence: the head itself when small
    (nearly always), else only what evidence shows of it, so that redacted_headers reads the
    same. A record waits in the recent-streams buffer: a 64 KiB head kept whole by each of
    1,000 records once held 58 MiB.

    `credentials`: the request's own (credentials_in), blanked wherever they are: an upstream
    that echoes the caller's key or cookie in a field of any name (`X-Debug-Caller`) got it
    into the evidence."""
    for credential in credentials:
        secret = credential.encode("utf-8", "surrogateescape")
        if secret in head:
            head = head.replace(secret, _REDACTED)
    if len(head) <= KEEP_HEAD_BYTES:
        return head
    status = head.split(b"\r\n", 1)[0][:MAX_HEADER_VALUE]  # evidence takes the status from the record
    lines = [f"{name}: {value}".encode("latin-1") for name, value in _fields(head)]
    return b"\r\n".join([status, *lines, b"", b""])


def stream_figures(rec: AuditRecord) -> dict[str, Any] | None:
    """What a replay of the stream must reproduce (the conformance cases' `record.stream`)."""
    s = rec.stream
    if s is None:
        return None
    return {
        "outcome": s.outcome.value,
        "end": s.end.value,
        "anomalies": list(s.anomalies),
        "frames": s.frames,
        "content_frames": s.content_frames,
        "keepalives": s.keepalives,
        "done": s.done,
        "finish_reasons": list(s.finish_reasons),
        "usage": s.usage,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "tool_calls": s.tool_calls,
        "unterminated_frame": s.unterminated_frame,
    }


def build(
    rec: AuditRecord, fields: dict[str, Any], redactor: Redactor, instance: str | None = None
) -> dict[str, Any]:
    """`fields`: the record's log fields (`logs.record_fields`), which the evidence includes."""
    info = rec.request
    s = rec.stream
    request: dict[str, Any] = {
        "method": rec.method,
        "route": rec.route,
        "path": ROUTE_PATHS.get(rec.route, OTHER_PATH),
        "model": rec.model,
        "stream": None if info is None else info.stream,
        "include_usage": None if info is None else info.include_usage,
        "shape": {} if info is None else orjson.loads(info.shape),
    }
    frames = []
    for entry in s.skeletons if s is not None else ():
        number, bits, doc = split_entry(entry)
        frames.append({"n": number, "kind": kind_name(bits), "skeleton": doc})
    return {
        "evidence_version": EVIDENCE_VERSION,
        "trace_id": rec.trace_id,
        "started_at": fields["started_at"],
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "instance": instance,
        "upstream": rec.upstream,
        "request": request,
        "response": {"status": rec.status, "headers": redacted_headers(rec.response_head, redactor)},
        "verdict": {
            "outcome": fields.get("outcome"),
            "anomalies": fields.get("anomalies", []),
            "reasons": fields.get("reasons", []),
            "end_reason": fields.get("end_reason"),
            "error": rec.error,
        },
        "record": fields,
        "stream": stream_figures(rec),
        # The serve flags it was judged by that are not the defaults: a replay needs them (one
        # at --max-frame-bytes 4096 did not reproduce its verdict: a second review).
        "thresholds": {} if s is None else s.thresholds.changed(),
        "timeline": None if s is None or s.timeline is None else s.timeline.to_json(),
        "frames": frames,
    }


def is_notable(rec: AuditRecord) -> bool:
    """A stream whose evidence is logged: anomalous, or not `complete`."""
    s = rec.stream
    return s is not None and (bool(s.anomalies) or s.outcome.value != "complete")

"""The readiness gates: pure functions from captured exchanges to PASS / FAIL / SKIP.

Each gate judges one property and says, when it fails, what is wrong and what to fix. One
root cause fails one gate: a later gate that meets a fault an earlier gate already reported
(a stream that broke off, a buffered answer) notes it and does not fail for it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from yarl import URL

from sse_audit_proxy.core.audit import Anomaly, End, Thresholds
from sse_audit_proxy.core.dialects.chat import REPEATED_TOOL_CALL_FIELDS
from sse_audit_proxy.core.figures import ms as millis
from sse_audit_proxy.tools.probe.api import Api
from sse_audit_proxy.tools.probe.client import Exchange, shown_response_headers
from sse_audit_proxy.tools.probe.facts import Answer, StreamFacts, ToolCallSeen, excerpt
from sse_audit_proxy.tools.probe.prompts import MAX_TOKENS, TOOL

GATES = ("route", "framing", "streaming", "usage", "tools", "cancellation")
BUFFERED = Thresholds()
BURST_SPACING = 0.002  # content frames closer than this arrived in one burst


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(slots=True)
class Gate:
    name: str
    api: str
    status: Status
    summary: str  # one line of evidence for the table
    problems: list[str] = field(default_factory=list)  # why it failed: what to fix
    notes: list[str] = field(default_factory=list)  # worth knowing, not a failure
    evidence: dict[str, Any] = field(default_factory=dict)
    trace_ids: list[str] = field(default_factory=list)


def _judge(gate: Gate) -> Gate:
    if gate.problems:
        gate.status = Status.FAIL
    return gate


def skipped(name: str, api: str, why: str) -> Gate:
    return Gate(name, api, Status.SKIP, why)


# Shared wording -----------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def usage_text(usage: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    if not usage:
        return "none"
    a, b, total = (usage.get(k) for k in keys)
    return f"{a}+{b}={total}"


def refusal(ex: Exchange, what: str) -> str:
    """Why `ex` got no usable answer, and what to check."""
    if ex.too_large:
        return (
            f"{what} got an answer too large to read: {ex.error}; the probe asks for a few "
            "tokens, so the route sent something else (an endless body, huge frames, a "
            "compression bomb)"
        )
    if ex.status == 0:
        error = ex.error or ""
        if "within" in error:
            hint = "check that the route is up and not overloaded, or raise --timeout"
        elif error.startswith("could not connect"):
            hint = "check --base-url and that the route is reachable from here"
        else:
            hint = (
                f"the route, or a load balancer in front of it, drops the connection: look "
                f"up trace ID {ex.trace_id} in their logs"
            )
        return f"{what} got no answer: {error}; {hint}"
    if ex.status < 400:
        return (
            f"{what} got HTTP {ex.status}, a redirect to {_where(ex.url, ex.header('Location'))}: point "
            "--base-url at the URL it leads to (the probe follows no redirect, nor do most "
            "SDKs' POSTs)"
        )
    message = ex.error_message()
    said = f" ({message})" if message else ""
    if ex.status in (401, 403):
        hint = (
            "the API key was refused or missing: check the key in the variable named by "
            "--api-key-env (--compare-api-key-env for the compare route)"
        )
    elif ex.status == 404:
        hint = (
            "check --base-url (the OpenAI base URL, usually ending in /v1) and --model, "
            "and that the route serves this API"
        )
    elif ex.status == 429:
        retry = ex.header("Retry-After")
        hint = (
            "the route is rate limiting"
            + (f" (Retry-After: {retry})" if retry else "")
            + ": raise its limits for this key, or probe again later"
        )
    elif ex.status >= 500:
        hint = f"the gateway failed: look up trace ID {ex.trace_id} in its logs"
    else:
        hint = "the route rejects this request: see its message"
    return f"{what} got HTTP {ex.status}{said}: {hint}"


def _where(request_url: str, location: str | None) -> str:
    """Where a Location leads (a relative one from the request's URL), without what may be
    secret in it (credentials, the query)."""
    if not location:
        return "nowhere (no Location)"
    try:
        url = URL(request_url).join(URL(location))
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "an unreadable Location"


def _wire_problems(ex: Exchange, timeout_hint: str = "") -> list[str]:
    """Transport-level faults of a stream: wrong content type, a cut, a stall, a torn frame."""
    out: list[str] = []
    if not ex.is_sse and isinstance(ex.doc, dict) and "error" in ex.doc:
        out.append(
            f"the stream was answered with HTTP {ex.status} and an error in a JSON body "
            f"({ex.error_message()}) instead of events: clients that trust the status "
            "miss the failure; the gateway must send a 4xx/5xx status or an error event"
        )
    elif not ex.is_sse:
        out.append(
            f"Content-Type is {ex.content_type or 'missing'!r}, not text/event-stream: "
            'the route ignored "stream": true, or something in between rewrote the '
            "answer; SSE clients will not parse it"
        )
    if ex.end is End.UPSTREAM_BROKEN:
        out.append(
            f"the connection broke mid-stream ({ex.error}): clients get an error "
            "instead of an answer; check the gateway's and load balancers' logs and "
            "timeouts"
        )
    elif ex.end is End.IDLE_TIMEOUT:
        out.append(f"the stream stalled: {ex.error}{timeout_hint}; clients hang until they give up")
    if ex.empty_events:
        out.append(
            f"{ex.empty_events} frame(s) with no `data:` line (an `event:` or `retry:` line alone, "
            "or a blank line after an `id:`): the openai Python SDK reads each as an event with "
            "empty data and raises JSONDecodeError; the gateway must send such fields with a "
            "`data:` line, or not at all"
        )
    if ex.unterminated:
        out.append(
            "the body ended inside a frame (no blank line after the last one): every "
            "SSE parser drops that frame"
        )
    return out


def _stream_problems(ex: Exchange) -> list[str]:
    assert ex.facts is not None
    wire = _wire_problems(ex)
    facts = ex.facts.problems
    if not ex.is_sse:
        facts = [p for p in facts if "no `data:` frames" not in p]
    return wire + facts


# route --------------------------------------------------------------------------------------


def route(api: Api, ex: Exchange, model: str) -> Gate:
    """A plain non-streamed request: the route answers, in shape, with finish and usage."""
    gate = Gate("route", api.name, Status.PASS, "", trace_ids=[ex.trace_id])
    a = ex.answer or Answer()
    gate.evidence = {
        "status": ex.status,
        "latency_ms": millis(ex.duration),
        "request_id": ex.request_id,
        "response_headers": shown_response_headers(ex.response_headers),
        "id": a.id,
        "object": a.object,
        "model": a.model,
        "finish_reason": a.finish,
        "usage": a.usage,
        "tool_calls": len(a.tool_calls),
        "text_chars": len(a.text),
    }
    p = gate.problems
    if ex.refused:
        p.append(refusal(ex, "a plain (non-streamed) request"))
    elif ex.doc is None and ex.end is End.TOTAL_TIMEOUT:
        p.append(f"the answer never finished: {ex.error}; clients hang until they give up")
    elif ex.doc is None:
        p.append(
            f"the answer is not JSON (Content-Type {ex.content_type!r}, starts "
            f"{ex.body_text[:60]!r}): the route does not speak the OpenAI API at {ex.url}"
        )
    else:
        p.extend(a.problems)
        if not a.model:
            p.append("the answer names no `model`: clients and logs cannot tell what answered")
        elif not a.model.startswith(model):
            gate.notes.append(
                f"answered as model {a.model!r} for {model!r}: check that the "
                "gateway maps the name to the model you expect"
            )
        if not a.finish:
            p.append("the answer has no finish reason: clients cannot tell a complete answer from a cut one")
        elif a.finish in AT_THE_LIMIT:
            gate.notes.append(f"the answer stopped at the probe's max tokens (finish: {a.finish})")
        elif (a.usage or {}).get(api.usage_keys[1]) == MAX_TOKENS:
            # transformers serve answers `completed`, without `incomplete_details`, at the
            # cap (an outside review): a client cannot tell such an answer from a whole one.
            gate.notes.append(
                f"the answer used all {MAX_TOKENS} tokens the probe allowed, yet its finish is "
                f"{a.finish!r}: the route may report answers cut at the limit as whole"
            )
        if not _has_counts(a.usage, api.usage_keys):
            p.append(
                "the answer carries no usage: token accounting (billing, quotas) sees nothing for this route"
            )
        elif zeros := _zero_counts(a.usage, api.usage_keys, _answer_text(a.text, a.tool_calls)):
            p.append(zeros)
    if not ex.refused and not ex.request_id:
        gate.notes.append(
            "no request ID header (x-request-id): ask the gateway team which "
            "header ties a request to their logs"
        )
    if not p:
        gate.summary = (
            f"HTTP {ex.status} in {ms(ex.duration)} · model {a.model} · finish "
            f"{a.finish} · usage {usage_text(a.usage, api.usage_keys)} · request id "
            f"{ex.request_id or '-'}"
        )
    else:
        gate.summary = _answered(ex)
    return _judge(gate)


def _answered(ex: Exchange) -> str:
    if ex.status == 0:
        return f"no answer after {ms(ex.duration)}"
    return f"HTTP {ex.status} in {ms(ex.duration)}"


# The finishes that say an answer stopped at its token limit (Chat, Messages, Responses).
AT_THE_LIMIT = frozenset({"length", "max_tokens", "max_output_tokens"})


def _has_counts(usage: dict[str, Any] | None, keys: tuple[str, ...]) -> bool:
    return bool(usage) and all(isinstance(usage.get(k), int) for k in keys[:2])  # type: ignore[union-attr]


def _zero_counts(usage: dict[str, Any] | None, keys: tuple[str, ...], answer: str) -> str:
    """A problem when usage counts no tokens for a prompt that was sent or an answer that was
    given: zeros passed as "token counts" (aimock's Responses route, an outside review)."""
    zero = [k for k in keys[:2] if (usage or {}).get(k) == 0]
    if keys[1] in zero and not answer:
        zero.remove(keys[1])  # no answer, no output tokens
    if not zero:
        return ""
    return (
        f"the usage counts 0 for {' and '.join(f'`{k}`' for k in zero)} although the prompt was "
        f"sent and the answer has {len(answer)} characters: token accounting (billing, quotas) "
        "sees nothing for this route"
    )


def hidden_cut(control: Exchange, ex: Exchange) -> tuple[int, int] | None:
    """(streamed, non-streamed) characters when the stream ended as whole but its answer is a
    shorter start of the non-streamed answer to the same prompt: a hop cut the stream and
    closed it as complete (LiteLLM ends a cut upstream stream with `stop`, made-up usage and
    `[DONE]`, an outside review). Sampling that differs makes answers that differ early, not
    one that stops part way through the other."""
    f = ex.facts
    a = control.answer
    if f is None or a is None or not _ended_whole(ex) or set(f.finish_reasons) & AT_THE_LIMIT:
        return None
    streamed, plain = _answer_text(f.text, f.tool_calls), _answer_text(a.text, a.tool_calls)
    if streamed and len(streamed) < len(plain) and plain.startswith(streamed):
        return len(streamed), len(plain)
    return None


# framing ------------------------------------------------------------------------------------


def framing(api: Api, ex: Exchange, control: Exchange | None = None) -> Gate:
    """The stream is well-formed SSE in the API's shape and ends properly, with all of the
    answer (`control`: the non-streamed answer to the same prompt)."""
    gate = Gate("framing", api.name, Status.PASS, "", trace_ids=[ex.trace_id])
    if ex.refused:
        gate.problems.append(refusal(ex, "the streaming request"))
        gate.summary = _answered(ex)
        return _judge(gate)
    f = ex.facts or StreamFacts()
    gate.problems.extend(_stream_problems(ex))
    cut = hidden_cut(control, ex) if control is not None else None
    if cut is not None:
        gate.problems.append(
            f"the streamed answer is the first {cut[0]} of the {cut[1]} characters of the "
            f"non-streamed answer to the same prompt, yet the stream ended as whole (finish "
            f"{','.join(f.finish_reasons)}): the stream was cut and a hop closed it as complete, "
            "and clients show a shortened answer as finished (or, rarely, the model stopped "
            "early in one of the two: probe again)"
        )
    gate.evidence = {
        "content_type": ex.content_type,
        "content_encoding": ex.header("Content-Encoding"),
        "data_frames": f.data_frames,
        "keepalives": ex.keepalives,
        "empty_events": ex.empty_events,
        "malformed_frames": f.malformed,
        "ids": f.ids,
        "types": f.objects,
        "models": f.models,
        "finish_reasons": f.finish_reasons,
        "done": f.done,
        "terminal": f.terminal,
        "errors": f.errors,
        "bytes": ex.raw_bytes,
        "end": ex.end.value,
        "unterminated_frame": ex.unterminated,
    }
    kinds = f.objects[0] if len(f.objects) == 1 else f"{len(f.objects) or 'no'} types"
    ending = "[DONE]" if f.done else ("terminal event" if f.terminal else "no end marker")
    gate.summary = (
        f"{f.data_frames} frames · {len(f.ids)} id · {kinds} · finish "
        f"{','.join(f.finish_reasons) or '-'} · {ending}"
    )
    return _judge(gate)


# streaming ----------------------------------------------------------------------------------


def streaming(api: Api, ex: Exchange, control: Exchange) -> Gate:
    """The answer arrives token by token: FAIL on the proxy's `buffered` verdict; `bursty` is a
    note."""
    r = ex.result
    if ex.refused or r is None or not r.content_frames:
        return skipped("streaming", api.name, "no content arrived to time (see framing)")
    gate = Gate("streaming", api.name, Status.PASS, "", trace_ids=[ex.trace_id])
    f = ex.facts or StreamFacts()
    spacing = [b - a for a, b in zip(f.content_at, f.content_at[1:], strict=False)]
    last = f.content_at[-1] if f.content_at else None
    share = r.ttft / last if r.ttft is not None and last else None
    mean = sum(spacing) / len(spacing) if spacing else None
    bursts = sum(1 for s in spacing if s < BURST_SPACING)
    gate.evidence = {
        "ttfb_ms": millis(r.ttfb),
        "ttft_ms": millis(r.ttft),
        "duration_ms": millis(r.duration),
        "ttft_share_of_last_content": None if share is None else round(share, 3),
        "ttft_share_of_total": (
            round(r.ttft / r.duration, 3) if r.ttft is not None and r.duration > 0 else None
        ),
        "content_frames": r.content_frames,
        "frames": r.frames,
        "reads": len(ex.chunks),
        "keepalives": r.keepalives,
        "content_spacing_mean_ms": millis(mean),
        "content_spacing_max_ms": millis(max(spacing) if spacing else None),
        "content_frames_in_bursts": bursts,
        "max_gap_ms": millis(r.max_gap),
        "outcome": r.outcome.value,
        "anomalies": list(r.anomalies),
    }
    gate.summary = (
        f"ttft {ms(r.ttft)} ({_pct(share)} of the time to the last token) · "
        f"{r.content_frames} content frames · spacing mean {ms(mean)} max "
        f"{ms(max(spacing) if spacing else None)}"
    )
    expected = (control.answer.usage or {}).get(api.usage_keys[1]) if control.answer else None
    if Anomaly.BUFFERED in r.anomalies:
        gate.problems.append(
            f"the answer was held back and released in one burst: the first token came after "
            f"{ms(r.ttft)} ({_pct(share)} of the wait for the last), then {r.content_frames} "
            f"content frames {ms(mean)} apart on average: the route, or a proxy, load balancer "
            "or compression in it, buffers the stream and users see nothing until the whole "
            "answer is ready; turn response buffering off for text/event-stream (e.g. nginx "
            "`proxy_buffering off` or `X-Accel-Buffering: no`), and make any compression flush "
            "every event"
            + (
                "; its events end in CRLF (`\\r\\n\\r\\n`), which some gateways that split "
                "events only on `\\n\\n` (Portkey's) hold until the answer ends: check each "
                "hop's handling of CRLF line ends"
                if _crlf_events(ex)
                else ""
            )
        )
    elif r.content_frames == 1 and isinstance(expected, int) and expected > 4 and not _cut_short(ex, control):
        gate.problems.append(
            f"the whole answer ({expected} tokens non-streamed) came in one content frame: the "
            "route streams the finished answer, not tokens as they are generated"
        )
    elif r.content_frames < BUFFERED.buffered_min_frames:
        gate.notes.append(f"only {r.content_frames} content frames: too few to judge buffering")
    elif _released_or_fast(r.ttft, share, mean):
        # LiteLLM replays a buffering upstream's held answer a frame a write, about 0.5 ms
        # apart: at the line between a release and a fast decoder (an outside review).
        gate.notes.append(
            f"the first token came after {ms(r.ttft)} ({_pct(share)} of the wait for the last), "
            f"then {r.content_frames} content frames {ms(mean)} apart on average: too fast to "
            "tell a fast decoder from a hop that replays a held answer frame by frame (LiteLLM "
            "in front of a buffering upstream does so); compare with the provider directly"
        )
    if Anomaly.BURSTY in r.anomalies:
        # A note, not a failure: a fast decoder with a few pauses of its own (a busy provider)
        # has the same shape as a hop that re-batches the stream (second review).
        said = next((why for why in r.reasons if why.startswith(f"{Anomaly.BURSTY}: ")), "")
        gate.notes.append(
            f"the answer came in clumps ({said.partition(': ')[2] or 'bursty'}): if the provider "
            "does not pause so itself, something in the route collects the stream and flushes it "
            "in batches (a proxy's buffering: nginx's proxy_buffering with HTTP/1.0 upstream, "
            "HAProxy without option http-no-delay; compression that does not flush per event); "
            "compare with the provider directly"
        )
    return _judge(gate)


def _released_or_fast(ttft: float | None, share: float | None, mean: float | None) -> bool:
    """Every `buffered` rule held but the last (released, not paced): the wait, the spacing."""
    th = BUFFERED
    return (
        ttft is not None
        and ttft >= th.buffered_min_ttft
        and share is not None
        and share >= th.buffered_wait_ratio
        and mean is not None
        and mean < th.buffered_max_spacing
    )


def _cut_short(ex: Exchange, control: Exchange) -> bool:
    """The stream broke off, or was cut and closed as whole: framing says so, and its one
    content frame is not the finished answer sent at once (an outside review: llmock cutting
    after the first frame failed streaming too, for buffering that was not there)."""
    return not _ended_whole(ex) or hidden_cut(control, ex) is not None


def _crlf_events(ex: Exchange) -> bool:
    """The stream's first event ends with CRLF line ends (SSE allows CR, LF or CRLF)."""
    head = b"".join(chunk for _, chunk in ex.chunks[:8])[:65536]
    end = head.find(b"\n\n")
    return b"\r\n\r\n" in head and (end < 0 or head.find(b"\r\n\r\n") < end)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


# usage --------------------------------------------------------------------------------------


def usage(api: Api, control: Exchange, ex: Exchange) -> Gate:
    """The streamed usage is there and equals the non-streamed usage for the same prompt."""
    if ex.refused:
        return skipped("usage", api.name, "the streaming request was refused (see framing)")
    f = ex.facts or StreamFacts()
    a = control.answer or Answer()
    gate = Gate("usage", api.name, Status.PASS, "", trace_ids=[control.trace_id, ex.trace_id])
    gate.evidence = {
        "asked_with": api.usage_request,
        "streamed": f.usage,
        "streamed_in": f.usage_where or None,
        "non_streamed": a.usage,
    }
    if f.usage is None:
        if not f.terminal or f.errors or ex.end is not End.UPSTREAM_EOF:
            return skipped(
                "usage", api.name, "the stream broke off before its end, where the usage comes (see framing)"
            )
        if api.name == "chat":
            gate.problems.append(
                "no usage chunk although stream_options.include_usage was set: the gateway drops "
                "the usage chunk; finance will see no tokens for streamed calls"
            )
        else:
            gate.problems.append(
                "the terminal event carries no `response.usage`: the gateway drops it; finance "
                "will see no tokens for streamed calls"
            )
        gate.summary = "no usage in the stream"
        return _judge(gate)
    if hidden_cut(control, ex) is not None:
        return skipped("usage", api.name, "the stream was cut short and closed as whole (see framing)")
    diff = usage_diff(a.usage, f.usage, api.usage_keys)
    gate.evidence["difference"] = diff
    shown = usage_text(f.usage, api.usage_keys)
    zeros = _zero_counts(f.usage, api.usage_keys, _answer_text(f.text, f.tool_calls))
    if zeros:
        gate.problems.append(f"streamed: {zeros}")
        gate.summary = f"streamed {shown}"
        return _judge(gate)
    if not diff:
        gate.summary = f"streamed {shown} equals non-streamed · in {f.usage_where}"
        return gate
    said = ", ".join(f"{k} {d['non_streamed']} -> {d['streamed']} ({d['delta']:+d})" for k, d in diff.items())
    same_answer = _answer_text(a.text, a.tool_calls) == _answer_text(f.text, f.tool_calls)
    gate.evidence["same_answer_text"] = same_answer
    gate.summary = f"streamed {shown} vs non-streamed {usage_text(a.usage, api.usage_keys)}"
    if same_answer or api.usage_keys[0] in diff:
        what = (
            "for the same prompt and the same answer"
            if same_answer
            else "in its prompt tokens, for the same prompt (the answers differ, the prompts do not)"
        )
        gate.problems.append(
            f"the streamed usage differs from the non-streamed usage {what}: {said}: the gateway "
            "counts streamed tokens differently; billing and quotas for streamed calls will not match"
        )
        return _judge(gate)
    return skipped(
        "usage",
        api.name,
        f"the streamed and non-streamed answers differ in text "
        f"(the model is not deterministic here at temperature 0), so their token "
        f"counts cannot be compared: {said}",
    )


def usage_diff(
    before: dict[str, Any] | None, after: dict[str, Any] | None, keys: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """The compared counts that differ: {key: {non_streamed, streamed, delta}}."""
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        x, y = (before or {}).get(key), (after or {}).get(key)
        if x != y:
            delta = y - x if isinstance(x, int) and isinstance(y, int) else 0
            out[key] = {"non_streamed": x, "streamed": y, "delta": delta}
    return out


def _answer_text(text: str, calls: list[ToolCallSeen]) -> str:
    return text + "".join(f"{c.name}({c.arguments})" for c in calls)


# tools --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    """One request of a multi-request gate, judged in the light of the earlier gates."""

    gate: Gate
    framing: Gate
    streaming: Gate
    judged: int = 0

    def usable(self, ex: Exchange, label: str, *, buffering: bool = False) -> bool:
        """False when `ex` cannot be judged here: refused (a problem of this gate) or broken
        the way an earlier gate already reported (a note)."""
        if ex.refused:
            self.gate.problems.append(refusal(ex, label))
            return False
        own = _stream_problems(ex)
        if own:
            shared = {_shape_of(p) for p in self.framing.problems}
            new = [p for p in own if _shape_of(p) not in shared]
            if new:
                self.gate.problems.extend(f"{label}: {p}" for p in new)
                return False
            if not _ended_whole(ex):
                self.gate.notes.append(f"{label}: not judged, it broke like the main stream (see framing)")
                return False
            # The main stream's faults, at its end (no `[DONE]`): what this stream said before
            # them is still whole, and a tool call dropped or garbled there was hidden behind
            # a SKIP until the framing was fixed (an outside review, on transformers serve).
            self.gate.notes.append(f"{label}: has the main stream's framing faults (see framing)")
        if buffering and ex.result is not None and Anomaly.BUFFERED in ex.result.anomalies:
            if self.streaming.status is Status.FAIL:
                self.gate.notes.append(f"{label}: buffered like the main stream (see streaming)")
            else:
                self.gate.problems.append(
                    f"{label} was buffered: the answer came in one burst "
                    f"after {ms(ex.result.ttft)}, although plain answers "
                    "stream"
                )
            return False
        self.judged += 1
        return True


def _shape_of(problem: str) -> str:
    """A problem's words without its counts, ids and quotes: the same fault in another stream."""
    return re.sub(r"\w*\d\w*|'[^']*'|\([^)]*\)", "#", problem)


def _ended_whole(ex: Exchange) -> bool:
    """The stream ran to the upstream's clean end, every choice finished, with no error frame."""
    f = ex.facts
    return (
        ex.end is End.UPSTREAM_EOF
        and f is not None
        and bool(f.finish_reasons)
        and not f.errors
        and not f.malformed
        and not any("no `finish_reason`" in p for p in f.problems)
    )


def first_call(ex: Exchange | None) -> ToolCallSeen | None:
    if ex is None or ex.facts is None or not ex.facts.tool_calls:
        return None
    return ex.facts.tool_calls[0]


def tools(
    api: Api,
    call_ex: Exchange,
    result_ex: Exchange | None,
    no_tool_ex: Exchange,
    framing_gate: Gate,
    streaming_gate: Gate,
) -> Gate:
    """A streamed tool call assembles, its result is answered, and text still streams."""
    gate = Gate(
        "tools",
        api.name,
        Status.PASS,
        "",
        trace_ids=[e.trace_id for e in (call_ex, result_ex, no_tool_ex) if e],
    )
    part = _Part(gate, framing_gate, streaming_gate)
    call = first_call(call_ex)
    if part.usable(call_ex, "the tool-call stream"):
        _judge_call(gate, call_ex, call)
    if result_ex is None:
        gate.notes.append(
            "the follow-up with the tool result was not sent: no tool call with an id and a name to answer"
        )
    elif part.usable(result_ex, "the follow-up carrying the tool result"):
        rf = result_ex.facts or StreamFacts()
        gate.evidence["follow_up"] = {
            "finish_reasons": rf.finish_reasons,
            "text_chars": len(rf.text),
            "tool_calls": len(rf.tool_calls),
        }
        if not rf.text and not rf.tool_calls:
            gate.problems.append(
                "the follow-up carrying the tool result completed with an empty "
                "answer: the gateway does not pass tool results to the model"
            )
    if part.usable(no_tool_ex, 'the answer with tools offered and tool_choice "none"', buffering=True):
        _judge_no_tool(gate, no_tool_ex)
    if not gate.problems and not part.judged:
        broke = all("see framing" in n for n in gate.notes)
        return skipped(
            "tools",
            api.name,
            "the tool streams broke off like the main stream (see framing)"
            if broke
            else "; ".join(gate.notes) or "nothing to judge",
        )
    if not gate.problems:
        follow = gate.evidence.get("follow_up", {}).get("finish_reasons")
        gate.summary = (
            f"{call.name if call else '-'}({_short(call.arguments if call else '')}) "
            f"id {call.call_id if call else '-'} · follow-up finish "
            f"{','.join(follow or []) or '-'} · text with tools offered: "
            f"{gate.evidence.get('no_tool', {}).get('content_frames', '-')} frames"
        )
    else:
        gate.summary = f"{len(gate.problems)} problem(s)"
    return _judge(gate)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _judge_call(gate: Gate, ex: Exchange, call: ToolCallSeen | None) -> None:
    f = ex.facts or StreamFacts()
    p = gate.problems
    gate.evidence["tool_call"] = {
        "calls": len(f.tool_calls),
        "id": call.call_id if call else None,
        "name": call.name if call else None,
        "arguments": call.arguments if call else None,
        "fragments": ex.result.content_frames if ex.result else None,
        "finish_reasons": f.finish_reasons,
    }
    if call is None:
        p.append(
            f"no tool call streamed although tool_choice named {TOOL['name']}: the gateway "
            "drops streamed tool calls, or ignores `tools` / `tool_choice`"
        )
        return
    if not call.call_id:
        p.append("the streamed tool call has no id: the follow-up carrying its result cannot refer to it")
    if call.name != TOOL["name"]:
        p.append(
            f"the streamed tool call names {call.name!r}, not {TOOL['name']!r}: the gateway "
            "loses or rewrites the function name"
        )
    try:
        value = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        p.append(
            f"the argument fragments assemble into {excerpt(call.arguments.encode())}, "
            "which is not a JSON object: clients that parse the arguments fail; the gateway "
            "(or its tool-call parser) loses, repeats or reorders fragments"
        )
    if call.done_arguments is not None and call.done_arguments != call.arguments:
        p.append(
            f"the argument deltas add up to {excerpt(call.arguments.encode())} but the "
            f"`.done` event says {excerpt(call.done_arguments.encode())}: clients that "
            "assemble deltas and clients that read `.done` get different calls"
        )
    if ex.result is not None and REPEATED_TOOL_CALL_FIELDS in ex.result.anomalies:
        p.append(
            "a later delta of the tool call repeats its `id` or `function.name` (the proxy's "
            "`repeated_tool_call_fields`): clients that join the deltas get `call_1call_1` or "
            "`get_weatherget_weather` (the openai Python SDK's stream helper both, LangChain the "
            "name) and cannot answer the call; the gateway must send the id and name in the first "
            "delta only"
        )
    if api_finish_bad(f.finish_reasons):
        gate.notes.append(f"the tool-call stream finished with {', '.join(f.finish_reasons)}")


def api_finish_bad(reasons: list[str]) -> bool:
    return bool(reasons) and not set(reasons) <= {"tool_calls", "stop", "completed"}


def _judge_no_tool(gate: Gate, ex: Exchange) -> None:
    f = ex.facts or StreamFacts()
    frames = ex.result.content_frames if ex.result else 0
    gate.evidence["no_tool"] = {
        "content_frames": frames,
        "text_chars": len(f.text),
        "tool_calls": len(f.tool_calls),
        "ttft_ms": millis(ex.result.ttft if ex.result else None),
    }
    if f.tool_calls:
        gate.problems.append(
            'a request with tool_choice "none" got a tool call: the gateway ignores tool_choice'
        )
    elif not f.text:
        gate.problems.append(
            'no text streamed when tools were offered (tool_choice "none"): '
            "the gateway's tool-call handling swallows plain answers"
        )
    elif frames <= 1 and len(f.text.split()) > 4:
        gate.problems.append(
            "the text came in one piece when tools were offered: the gateway's "
            "tool-call parser holds text back until the answer ends, so users "
            "see nothing until then"
        )


# cancellation -------------------------------------------------------------------------------


@dataclass(slots=True)
class ProxyCheck:
    """What the proxy in front of the route recorded for the cancelled stream."""

    metrics_url: str
    record: dict[str, Any] | None
    error: str | None
    missing_earlier: str | None = None  # a finished stream's trace ID it has no record of


def cancellation(api: Api, ex: Exchange, after: Exchange | None, proxy: ProxyCheck | None) -> Gate:
    """The probe aborts a stream after a few frames; the route (and the proxy) cope."""
    gate = Gate("cancellation", api.name, Status.PASS, "", trace_ids=[e.trace_id for e in (ex, after) if e])
    if ex.refused:
        gate.problems.append(refusal(ex, "the stream to cancel"))
        gate.summary = _answered(ex)
        return _judge(gate)
    if ex.cancelled_after is None:
        why = (
            "the whole stream arrived before the probe could abort it after a few frames"
            if ex.end is End.UPSTREAM_EOF
            else f"the stream ended first ({ex.error})"
        )
        return skipped("cancellation", api.name, f"{why}: nothing to cancel")
    gate.evidence = {
        "aborted_after_frames": ex.cancelled_after,
        "aborted_at_ms": millis(ex.events[-1][0] if ex.events else None),
        "bytes_before_abort": ex.raw_bytes,
        "trace_id_echoed": ex.trace_echoed,
    }
    parts = [f"aborted after {ex.cancelled_after} frames at {ms(ex.events[-1][0] if ex.events else None)}"]
    if after is not None:
        gate.evidence["next_request"] = {
            "status": after.status,
            "latency_ms": millis(after.duration),
            "trace_id": after.trace_id,
        }
        if after.refused or after.doc is None:
            what = (
                refusal(after, "the next request")
                if after.refused
                else "the next request got an answer that is not JSON"
            )
            gate.problems.append(
                f"after a cancelled stream the route failed the next request: "
                f"{what}; check that the gateway cleans up cancelled streams "
                f"(trace ID {ex.trace_id})"
            )
        else:
            parts.append(f"next request HTTP {after.status} in {ms(after.duration)}")
    _judge_proxy(gate, ex, proxy, parts)
    gate.summary = " · ".join(parts)
    return _judge(gate)


def _judge_proxy(gate: Gate, ex: Exchange, proxy: ProxyCheck | None, parts: list[str]) -> None:
    if proxy is None:
        if ex.trace_echoed:
            gate.notes.append(
                "the answer echoed X-Client-Request-Id, as sse-audit-proxy does: "
                "pass --proxy-metrics-url (the proxy's metrics port) to confirm it "
                "recorded client_disconnect"
            )
        return
    rec = proxy.record
    gate.evidence["proxy"] = {
        "metrics_url": proxy.metrics_url,
        "record": rec,
        "error": proxy.error,
        "missing_earlier": proxy.missing_earlier,
    }
    if proxy.error:
        gate.problems.append(
            f"could not ask the proxy about trace ID {ex.trace_id}: "
            f"{proxy.error}; is --proxy-metrics-url the metrics port of the "
            "proxy at --base-url?"
        )
    elif proxy.missing_earlier:
        gate.problems.append(
            f"the proxy at {proxy.metrics_url} has no record of trace ID "
            f"{proxy.missing_earlier} (a stream that finished earlier) nor of "
            f"the cancelled {ex.trace_id}: the probe does not go through it; "
            "is --proxy-metrics-url the metrics port of the proxy at "
            "--base-url?"
        )
    elif rec is None:
        gate.problems.append(
            f"the proxy at {proxy.metrics_url} has no record of trace ID "
            f"{ex.trace_id}: either the probe did not go through it (is "
            "--proxy-metrics-url the metrics port of the proxy at --base-url?) "
            "or it lost the record of a cancelled stream"
        )
    elif rec.get("outcome") == "client_disconnect":
        parts.append(f"proxy recorded client_disconnect ({rec.get('end_reason')})")
    elif rec.get("outcome") == "complete":
        gate.notes.append(
            "the proxy had relayed the whole stream before the abort reached it "
            "(outcome complete): cancellation through it was not exercised"
        )
    else:
        gate.problems.append(
            f"the proxy recorded outcome {rec.get('outcome')!r} for the "
            "cancelled stream, not client_disconnect: it did not notice the "
            "client leaving, so it may keep the gateway generating for nobody"
        )

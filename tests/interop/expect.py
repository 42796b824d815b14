"""The verdict a careful person gives from a stream's raw bytes, written out independently of the
proxy's audit: what ended the stream, which end markers came, which error frames, which usage.

Rules (docs/operate/verdicts.md): a stream is `complete` when its protocol's end marker came (`[DONE]`
for Chat Completions, `response.completed`/`incomplete` for Responses, `message_stop` for
Anthropic, a `finishReason` for every candidate (or the prompt's `blockReason`) for Gemini),
`truncated` when the body ended (or the connection broke) before it, and
`upstream_error` for an HTTP error status, a `response.failed`/`error` event, or a Chat stream
whose last data frame is an error frame or after whose error frame no choice finished. Any
error frame is the anomaly `error_event`. Completeness anomalies (`missing_done`,
`missing_finish_reason`, `missing_usage`) are judged on complete and truncated streams only.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from wire import Wire


@dataclass
class Expected:
    outcome: str
    anomalies: set[str] = field(default_factory=set)
    done: bool = False
    finish_reasons: list[str] = field(default_factory=list)
    usage: tuple[int | None, int | None] | None = None  # (input, output) tokens
    # True: clearly held back and released at once; False: clearly not (too few content frames);
    # None: judged by spacing alone, which on a loaded machine depends on the run.
    buffered: bool | None = None
    tool_calls: int = 0


def frames(body: bytes) -> tuple[list[str], int]:
    """The data of every SSE event, and the count of comment lines (keep-alives)."""
    text = body.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    datas: list[str] = []
    comments = 0
    for block in text.split("\n\n"):
        lines = [x for x in block.split("\n") if x]
        comments += sum(1 for x in lines if x.startswith(":"))
        data = [x[5:].removeprefix(" ") for x in lines if x.startswith("data:")]
        if data:
            datas.append("\n".join(data))
    return datas, comments


def _json(data: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def judge(wire: Wire, api: str, include_usage: bool = True) -> Expected:
    if wire.status >= 400:
        return Expected("upstream_error")
    content_type = (wire.header("Content-Type") or "").split(";")[0].strip().lower()
    datas, _ = frames(wire.body)
    if content_type != "text/event-stream" and not datas:
        return Expected("complete", {"not_streamed"})  # an ordinary answer to a stream request
    judges = {"chat": _chat, "responses": _responses, "messages": _messages, "gemini": _gemini}
    exp = judges[api](datas, include_usage)
    if wire.broken and exp.outcome == "complete":
        exp.outcome = "truncated"
    exp.buffered = buffered(content_times(wire, api))
    if exp.buffered:
        exp.anomalies.add("buffered")
    if content_type != "text/event-stream":
        exp.anomalies.add("wrong_content_type")
    if exp.outcome not in ("complete", "truncated"):
        exp.anomalies -= {"missing_done", "missing_finish_reason", "missing_usage", "invalid_tool_arguments"}
    return exp


def _chat(datas: list[str], include_usage: bool) -> Expected:
    done = "[DONE]" in datas
    finish: dict[int, str] = {}
    tools: dict[tuple[int, int], str] = {}  # (choice, call index) -> assembled arguments
    usage = None
    errors_at: list[int] = []
    finished_after_error = False
    malformed = repeated = False
    named: set[tuple[Any, bool]] = set()  # (call, is its id): the call's id or name came
    for i, data in enumerate(datas):
        if data == "[DONE]":
            continue
        doc = _json(data)
        if doc is None:
            malformed = True
            continue
        if doc.get("error"):
            errors_at.append(i)
            continue
        if doc.get("usage"):
            usage = (doc["usage"].get("prompt_tokens"), doc["usage"].get("completion_tokens"))
        for choice in doc.get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                index = call.get("index")
                if not (isinstance(index, int) or (isinstance(index, float) and index.is_integer())):
                    malformed = True  # the AI SDK rejects such a chunk; the SDKs' helpers lose the call
                key = (choice.get("index", 0), call.get("index", 0))
                for is_id, value in (
                    (True, call.get("id")),
                    (False, (call.get("function") or {}).get("name")),
                ):
                    if value and (key, is_id) in named:
                        repeated = True  # the openai SDK's helper joins them: call_1call_1
                    elif value:
                        named.add((key, is_id))
                tools[key] = tools.get(key, "") + ((call.get("function") or {}).get("arguments") or "")
            if choice.get("finish_reason"):
                finish[choice.get("index", 0)] = choice["finish_reason"]
                finished_after_error = bool(errors_at)
    last = next((d for d in reversed(datas) if d != "[DONE]"), None)
    anomalies: set[str] = set()
    if errors_at:
        anomalies.add("error_event")
    if malformed:
        anomalies.add("malformed_frame")
    if repeated:
        anomalies.add("repeated_tool_call_fields")
    if errors_at and (
        (last is not None and _json(last) is not None and _json(last).get("error"))  # type: ignore[union-attr]
        or not finished_after_error
    ):
        outcome = "upstream_error"
    else:
        outcome = "complete" if done else "truncated"
    if not done:
        anomalies.add("missing_done")
    if not finish:
        anomalies.add("missing_finish_reason")
    if include_usage and usage is None:
        anomalies.add("missing_usage")
    if any(not isinstance(_json(args or "{}"), dict) for args in tools.values()):
        anomalies.add("invalid_tool_arguments")
    return Expected(
        outcome, anomalies, done, [finish[k] for k in sorted(finish)], usage, tool_calls=len(tools)
    )


def _parts(item: dict[str, Any]) -> list[Any] | None:
    return [p.get("type") for p in item.get("content") or []] if item.get("type") == "message" else None


def _responses(datas: list[str], include_usage: bool) -> Expected:
    outcome, usage, finish = "truncated", None, []
    anomalies: set[str] = set()
    done = "[DONE]" in datas
    calls: set[Any] = set()
    items: dict[Any, list[Any] | None] | None = None  # output_index -> a message's part types
    for data in datas:
        if data == "[DONE]":
            continue
        doc = _json(data)
        if doc is None:
            anomalies.add("malformed_frame")
            continue
        kind = doc.get("type")
        item = doc.get("item") or {}
        if items is None:  # the SDKs' stream helpers raise unless the response is created first
            if kind not in ("response.created", "error"):
                anomalies.add("malformed_frame")
            output = (doc.get("response") or {}).get("output") or []
            items = {i: _parts(o) for i, o in enumerate(output)}
        elif kind == "response.output_item.added":
            items.setdefault(doc.get("output_index"), _parts(item))
        elif kind in (
            "response.content_part.added",
            "response.output_text.delta",
            "response.function_call_arguments.delta",
        ):
            index = doc.get("output_index")
            parts = items.get(index)
            at = doc.get("content_index", -1)
            if index not in items:
                anomalies.add("malformed_frame")  # an item never added
            elif parts is None:
                pass  # not a message: the helpers look at no part
            elif kind == "response.content_part.added":
                parts.append((doc.get("part") or {}).get("type"))
            elif kind == "response.output_text.delta" and not (
                0 <= at < len(parts) and parts[at] == "output_text"
            ):
                anomalies.add("malformed_frame")  # a text part never added
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            calls.add(doc.get("output_index"))
        if (
            kind == "response.output_item.done"
            and item.get("type") == "function_call"
            and not isinstance(_json(item.get("arguments") or "{}"), dict)
        ):
            anomalies.add("invalid_tool_arguments")
        if kind in ("response.completed", "response.incomplete", "response.failed", "error"):
            response = doc.get("response") or {}
            outcome = "upstream_error" if kind in ("response.failed", "error") else "complete"
            if kind == "error":
                anomalies.add("error_event")
            if response.get("usage"):
                usage = (response["usage"].get("input_tokens"), response["usage"].get("output_tokens"))
            if kind == "response.incomplete":
                finish = [(response.get("incomplete_details") or {}).get("reason", "incomplete")]
            elif kind == "response.completed":
                finish = [response.get("status") or "completed"]
    if usage is None:
        anomalies.add("missing_usage")
    return Expected(outcome, anomalies, done, finish, usage, tool_calls=len(calls))


def _messages(datas: list[str], include_usage: bool) -> Expected:
    outcome, finish = "truncated", []
    usage: dict[str, int] = {}
    inputs: dict[Any, str] = {}  # tool_use block index -> assembled input JSON
    anomalies: set[str] = set()
    for data in datas:
        doc = _json(data)
        if doc is None:
            anomalies.add("malformed_frame")
            continue
        kind = doc.get("type")
        if kind == "message_start":
            usage.update(
                (k, v) for k, v in ((doc.get("message") or {}).get("usage") or {}).items() if v is not None
            )
        elif kind == "message_delta":
            reason = (doc.get("delta") or {}).get("stop_reason")
            if reason:
                finish = [reason]
            usage.update((k, v) for k, v in (doc.get("usage") or {}).items() if v is not None)
        elif kind == "content_block_start" and (doc.get("content_block") or {}).get("type") == "tool_use":
            inputs[doc.get("index")] = ""
        elif kind == "content_block_delta" and (doc.get("delta") or {}).get("type") == "input_json_delta":
            if doc.get("index") in inputs:
                inputs[doc["index"]] += (doc.get("delta") or {}).get("partial_json") or ""
        elif kind == "message_stop":
            outcome = "complete"
        elif kind == "error":
            outcome = "upstream_error"
            anomalies.add("error_event")
    if not finish:
        anomalies.add("missing_finish_reason")
    if not usage:
        anomalies.add("missing_usage")
    tokens = (usage.get("input_tokens"), usage.get("output_tokens")) if usage else None
    if any(not isinstance(_json(text or "{}"), dict) for text in inputs.values()):
        anomalies.add("invalid_tool_arguments")
    return Expected(outcome, anomalies, False, finish, tokens, tool_calls=len(inputs))


def _gemini(datas: list[str], include_usage: bool) -> Expected:
    finish: dict[int, str] = {}
    seen: set[int] = set()
    usage = None
    calls = 0
    anomalies: set[str] = set()
    error = False
    blocked = None
    for data in datas:
        doc = _json(data)
        if doc is None:
            anomalies.add("malformed_frame")
            continue
        if doc.get("error"):
            error = True
            anomalies.add("error_event")
            continue
        for candidate in doc.get("candidates") or ():
            index = candidate.get("index", 0)
            seen.add(index)
            parts = (candidate.get("content") or {}).get("parts") or ()
            calls += sum(1 for part in parts if (part.get("functionCall") or {}).get("name"))
            if candidate.get("finishReason") and index not in finish:
                finish[index] = candidate["finishReason"]
                error = False
        blocked = (doc.get("promptFeedback") or {}).get("blockReason") or blocked
        if doc.get("usageMetadata"):
            meta = doc["usageMetadata"]
            output = None
            if "candidatesTokenCount" in meta or "thoughtsTokenCount" in meta:
                output = meta.get("candidatesTokenCount", 0) + meta.get("thoughtsTokenCount", 0)
            usage = (meta.get("promptTokenCount"), output)
    if usage is None:
        anomalies.add("missing_usage")
    ended = blocked is not None or (bool(finish) and seen <= set(finish))
    outcome = "upstream_error" if error else "complete" if ended else "truncated"
    reasons = [blocked] if blocked else [finish[k] for k in sorted(finish)]
    return Expected(outcome, anomalies, False, reasons, usage, tool_calls=calls)


def record_usage(record: dict[str, Any]) -> tuple[int | None, int | None] | None:
    usage = record.get("usage")
    if not usage:
        return None
    if record.get("route") == "gemini":
        output = None
        if "candidatesTokenCount" in usage or "thoughtsTokenCount" in usage:
            output = usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0)
        return usage.get("promptTokenCount"), output
    return (
        usage.get("prompt_tokens", usage.get("input_tokens")),
        usage.get("completion_tokens", usage.get("output_tokens")),
    )


def _is_content(api: str, doc: dict[str, Any]) -> bool:
    if api == "gemini":
        return any(
            part.get("text") or part.get("functionCall")
            for candidate in doc.get("candidates") or ()
            for part in (candidate.get("content") or {}).get("parts") or ()
        )
    if api == "chat":
        return any(
            isinstance(c, dict)
            and ((c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("tool_calls"))
            for c in doc.get("choices") or ()
        )
    kind = doc.get("type")
    if api == "responses":
        return bool(isinstance(kind, str) and kind.endswith(".delta") and doc.get("delta"))
    if kind == "content_block_delta":
        delta = doc.get("delta") or {}
        return bool(delta.get("text") or delta.get("partial_json") or delta.get("thinking"))
    block = doc.get("content_block") or {}
    return kind == "content_block_start" and (block.get("type") == "tool_use" or bool(block.get("text")))


def content_times(wire: Wire, api: str) -> list[float]:
    """When each content frame arrived (seconds since the request was sent)."""
    times: list[float] = []
    pending = ""
    for t, data in wire.chunks:
        pending += data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        *blocks, pending = pending.split("\n\n")
        for block in blocks:
            for line in block.split("\n"):
                doc = _json(line[5:].strip()) if line.startswith("data:") else None
                if doc is not None and _is_content(api, doc):
                    times.append(t)
    return times


def buffered(times: list[float]) -> bool | None:
    """The documented rule (5+ content frames, the first after 50 ms or more and at 80% or more
    of the wait for the last, then less than 2 ms apart on average, and released rather than
    paced: 75% of the gaps under 0.5 ms, or their mean), read with a margin: True only when it
    holds by far, False when it cannot hold, None in between.

    The raw fetch and the proxied run are two requests: a stream whose frames come 4 ms apart
    on one may arrive in clumps on the other when the 2-core machine is busy."""
    if len(times) < 5:
        return False
    spacing = (times[-1] - times[0]) / (len(times) - 1)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    released = sum(g < 0.00025 for g in gaps) >= 0.9 * len(gaps) or spacing < 0.00025
    if times[0] >= 0.3 and times[0] >= 0.95 * times[-1] and spacing < 0.0005 and released:
        return True
    return None

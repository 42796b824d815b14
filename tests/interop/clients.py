"""The interop matrix's clients, each reduced to what its user sees of a stream.

A result is a dict: `text`, `toolCalls` ([{name, arguments}]), `usage` ({input, output}),
`finish`, or `error` ({name, status}) when the client raised; `aborted` when it hung up early.
The same request through the proxy must give the same result as without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
from google import genai
from google.genai import types as genai_types
from servers import HERE

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather at a place",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}


@dataclass(frozen=True)
class Call:
    # openai_py | anthropic_py | genai_py | openai_node | ai_sdk | genai_node | workers_ai_node | curl
    client: str
    api: str  # chat | responses | messages | gemini | workers_ai
    model: str
    prompt: str
    tools: bool = False
    abort_after: int = 0  # hang up after this many content events (0: read to the end)
    path_prefix: str = ""  # before /v1/... (llmock serves Anthropic under /anthropic)
    headers: dict[str, str] = field(default_factory=dict)


def run(call: Call, base: str, key: str, trace_id: str) -> dict[str, Any]:
    headers = {"X-Client-Request-Id": trace_id, **call.headers}
    runner = {
        "openai_py": _openai_py,
        "anthropic_py": _anthropic_py,
        "genai_py": _genai_py,
        "curl": _curl,
    }.get(call.client)
    if runner is None:
        return _node(call, base, key, headers)
    try:
        return runner(call, base + call.path_prefix, key, headers)
    except Exception as exc:  # what the client raised is part of its result
        return {"error": {"name": type(exc).__name__, "status": getattr(exc, "status_code", None)}}


def _args(text: str | None) -> Any:
    """Tool arguments as the user's code would get them: parsed, or the raw text when broken."""
    try:
        return json.loads(text or "{}")
    except ValueError:
        return text


def _openai_py(call: Call, base: str, key: str, headers: dict[str, str]) -> dict[str, Any]:
    client = openai.OpenAI(
        base_url=base + "/v1", api_key=key, max_retries=0, timeout=30, default_headers=headers
    )
    with client:
        if call.api == "chat":
            return _openai_chat(client, call)
        return _openai_responses(client, call)


def _openai_chat(client: openai.OpenAI, call: Call) -> dict[str, Any]:
    extra: dict[str, Any] = {"tools": [{"type": "function", "function": WEATHER_TOOL}]} if call.tools else {}
    stream = client.chat.completions.create(
        model=call.model,
        messages=[{"role": "user", "content": call.prompt}],
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    out: dict[str, Any] = {"text": "", "usage": None, "finish": None}
    calls: dict[int, dict[str, str]] = {}
    content = 0
    with stream:
        for chunk in stream:
            if chunk.usage:
                out["usage"] = {"input": chunk.usage.prompt_tokens, "output": chunk.usage.completion_tokens}
            for choice in chunk.choices:
                if choice.delta.content:
                    out["text"] += choice.delta.content
                    content += 1
                for tc in choice.delta.tool_calls or ():
                    slot = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                    slot["name"] += (tc.function.name or "") if tc.function else ""
                    slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
                    content += 1
                out["finish"] = choice.finish_reason or out["finish"]
            if call.abort_after and content >= call.abort_after:
                out["aborted"] = True
                break
    out["toolCalls"] = [{"name": c["name"], "arguments": _args(c["arguments"])} for c in calls.values()]
    return out


def _openai_responses(client: openai.OpenAI, call: Call) -> dict[str, Any]:
    extra: dict[str, Any] = {"tools": [{"type": "function", **WEATHER_TOOL}]} if call.tools else {}
    stream = client.responses.create(model=call.model, input=call.prompt, stream=True, **extra)
    out: dict[str, Any] = {"text": "", "toolCalls": [], "usage": None, "finish": None}
    content = 0
    with stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                out["text"] += event.delta
                content += 1
            elif event.type == "response.output_item.done" and event.item.type == "function_call":
                out["toolCalls"].append({"name": event.item.name, "arguments": _args(event.item.arguments)})
            elif event.type in ("response.completed", "response.incomplete", "response.failed"):
                out["finish"] = event.response.status
                if event.response.usage:
                    u = event.response.usage
                    out["usage"] = {"input": u.input_tokens, "output": u.output_tokens}
            if call.abort_after and content >= call.abort_after:
                out["aborted"] = True
                break
    return out


def _anthropic_py(call: Call, base: str, key: str, headers: dict[str, str]) -> dict[str, Any]:
    client = anthropic.Anthropic(
        base_url=base, api_key=key, max_retries=0, timeout=30, default_headers=headers
    )
    extra: dict[str, Any] = {}
    if call.tools:
        extra["tools"] = [
            {
                "name": WEATHER_TOOL["name"],
                "description": WEATHER_TOOL["description"],
                "input_schema": WEATHER_TOOL["parameters"],
            }
        ]
    out: dict[str, Any] = {"text": "", "toolCalls": [], "usage": None, "finish": None}
    content = 0
    with (
        client,
        client.messages.stream(
            model=call.model, max_tokens=256, messages=[{"role": "user", "content": call.prompt}], **extra
        ) as stream,
    ):
        for event in stream:
            if event.type == "text":
                out["text"] += event.text
                content += 1
            if call.abort_after and content >= call.abort_after:
                out["aborted"] = True
                return out
        final = stream.get_final_message()
    out["finish"] = final.stop_reason
    out["usage"] = {"input": final.usage.input_tokens, "output": final.usage.output_tokens}
    out["toolCalls"] = [{"name": b.name, "arguments": b.input} for b in final.content if b.type == "tool_use"]
    return out


def _genai_py(call: Call, base: str, key: str, headers: dict[str, str]) -> dict[str, Any]:
    """Google's `google-genai` SDK on Gemini's native API (`:streamGenerateContent?alt=sse`)."""
    client = genai.Client(
        api_key=key,
        http_options=genai_types.HttpOptions(
            base_url=base,
            api_version="v1beta",  # (3.x defaults to v1; LiteLLM and aimock serve v1beta)
            headers=headers,
            timeout=30_000,
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
    config = genai_types.GenerateContentConfig(
        tools=[genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(**WEATHER_TOOL)])]
        if call.tools
        else None
    )
    out: dict[str, Any] = {"text": "", "toolCalls": [], "usage": None, "finish": None}
    content = 0
    try:
        for chunk in client.models.generate_content_stream(
            model=call.model, contents=call.prompt, config=config
        ):
            for candidate in chunk.candidates or ():
                for part in (candidate.content.parts if candidate.content else None) or ():
                    if part.text:
                        out["text"] += part.text
                        content += 1
                    if part.function_call:
                        out["toolCalls"].append(
                            {"name": part.function_call.name, "arguments": part.function_call.args}
                        )
                        content += 1
                if candidate.finish_reason:
                    out["finish"] = candidate.finish_reason.value
            usage = chunk.usage_metadata
            if usage and usage.candidates_token_count is not None:
                out["usage"] = {"input": usage.prompt_token_count, "output": usage.candidates_token_count}
            if call.abort_after and content >= call.abort_after:
                out["aborted"] = True
                break
    finally:
        client.close()
    return out


def _node(call: Call, base: str, key: str, headers: dict[str, str]) -> dict[str, Any]:
    spec = {
        "client": call.client,
        "api": call.api,
        "baseURL": base + call.path_prefix + "/v1",
        "base": base + call.path_prefix,
        "apiKey": key,
        "headers": headers,
        "model": call.model,
        "prompt": call.prompt,
        "tools": [WEATHER_TOOL] if call.tools else None,
        "abortAfter": call.abort_after,
    }
    result: dict[str, Any] = node_json("clients.mjs", [json.dumps(spec)], timeout=60)
    return result


def verdict(route: str, body: bytes, include_usage: bool = False) -> tuple[str, list[str]]:
    """The audit's outcome and anomalies for a whole body (one read), the route named as the
    dialects are (`chat_completions`, `responses`, `messages`), not by its path."""
    a = StreamAudit(dialect_for_route(route)(), 0.0, include_usage=include_usage)
    a.feed(body, 0.01)
    r = a.finish(0.5, End.UPSTREAM_EOF)
    return r.outcome.value, list(r.anomalies)


def node_json(script: str, args: list[str], timeout: float = 300) -> Any:
    """Run one of this folder's Node scripts; what it printed last, as JSON."""
    node = shutil.which("node")
    assert node is not None, "node is needed for the npm SDKs"
    done = subprocess.run(
        [node, str(HERE / script), *args], capture_output=True, timeout=timeout, check=False, cwd=HERE
    )
    lines = done.stdout.decode().strip().splitlines()
    assert lines, f"{script} printed nothing (exit {done.returncode}): {done.stderr.decode()[-2000:]}"
    return json.loads(lines[-1])


def request_body(call: Call) -> dict[str, Any]:
    """The request a plain HTTP client (curl, the raw fetch) sends for `call`."""
    if call.api == "gemini":
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": call.prompt}]}]}
        if call.tools:
            body["tools"] = [{"functionDeclarations": [WEATHER_TOOL]}]
        return body
    if call.api == "chat":
        body = {
            "model": call.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": call.prompt}],
        }
        if call.tools:
            body["tools"] = [{"type": "function", "function": WEATHER_TOOL}]
        return body
    if call.api == "responses":
        body = {"model": call.model, "stream": True, "input": call.prompt}
        if call.tools:
            body["tools"] = [{"type": "function", **WEATHER_TOOL}]
        return body
    body = {
        "model": call.model,
        "stream": True,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": call.prompt}],
    }
    if call.tools:
        body["tools"] = [
            {
                "name": WEATHER_TOOL["name"],
                "description": WEATHER_TOOL["description"],
                "input_schema": WEATHER_TOOL["parameters"],
            }
        ]
    return body


def api_path(call: Call) -> str:
    if call.api == "gemini":
        return f"{call.path_prefix}/v1beta/models/{call.model}:streamGenerateContent?alt=sse"
    return (
        call.path_prefix
        + {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}[call.api]
    )


def auth_headers(call: Call, key: str) -> dict[str, str]:
    if call.api == "messages":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if call.api == "gemini":
        return {"x-goog-api-key": key}
    return {"Authorization": f"Bearer {key}"}


def _curl(call: Call, base: str, key: str, headers: dict[str, str]) -> dict[str, Any]:
    """`curl -N`; the result is the stream's SSE data as curl printed it, reduced like the SDKs'."""
    curl = shutil.which("curl")
    assert curl is not None
    url = base + api_path(call).removeprefix(call.path_prefix)
    argv = [
        curl,
        "-sS",
        "-N",
        "--max-time",
        "30",
        "-X",
        "POST",
        url,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        json.dumps(request_body(call)),
    ]
    for name, value in (auth_headers(call, key) | headers).items():
        argv += ["-H", f"{name}: {value}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    events: list[Any] = []
    content = 0
    aborted = False
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\r\n")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        events.append(data)
        content += _is_content(data)
        if call.abort_after and content >= call.abort_after:
            proc.kill()
            aborted = True
            break
    proc.wait(30)
    out = reduce_events(call.api, events)
    if aborted:
        return {"aborted": True}
    out["exit"] = proc.returncode
    return out


def _is_content(data: str) -> int:
    try:
        doc = json.loads(data)
    except ValueError:
        return 0
    if not isinstance(doc, dict):
        return 0
    if doc.get("type") in ("response.output_text.delta", "content_block_delta"):
        return 1
    if "candidates" in doc:
        return int(any(_gemini_parts(c) for c in doc["candidates"] or () if isinstance(c, dict)))
    return int(
        any(c.get("delta", {}).get("content") for c in doc.get("choices") or () if isinstance(c, dict))
    )


def reduce_events(api: str, events: list[str]) -> dict[str, Any]:
    """What a reader of the raw data frames gets: text, tool calls, usage, finish, errors."""
    out: dict[str, Any] = {"text": "", "toolCalls": [], "usage": None, "finish": None, "errors": 0}
    calls: dict[Any, dict[str, str]] = {}
    for data in events:
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("error") or doc.get("type") == "error":
            out["errors"] += 1
        if api == "gemini":
            _reduce_gemini(doc, out)
        elif api == "chat":
            _reduce_chat(doc, out, calls)
        elif api == "responses":
            _reduce_responses(doc, out)
        else:
            _reduce_messages(doc, out, calls)
    for c in calls.values():
        out["toolCalls"].append({"name": c["name"], "arguments": _args(c["arguments"])})
    return out


def _reduce_chat(doc: dict[str, Any], out: dict[str, Any], calls: dict[Any, dict[str, str]]) -> None:
    if doc.get("usage"):
        usage = doc["usage"]
        out["usage"] = {"input": usage.get("prompt_tokens"), "output": usage.get("completion_tokens")}
    for choice in doc.get("choices") or ():
        delta = choice.get("delta") or {}
        out["text"] += delta.get("content") or ""
        for tc in delta.get("tool_calls") or ():
            slot = calls.setdefault(tc.get("index"), {"name": "", "arguments": ""})
            fn = tc.get("function") or {}
            slot["name"] += fn.get("name") or ""
            slot["arguments"] += fn.get("arguments") or ""
        out["finish"] = choice.get("finish_reason") or out["finish"]


def _reduce_responses(doc: dict[str, Any], out: dict[str, Any]) -> None:
    kind = doc.get("type")
    if kind == "response.output_text.delta":
        out["text"] += doc.get("delta") or ""
    elif kind == "response.output_item.done" and (doc.get("item") or {}).get("type") == "function_call":
        item = doc["item"]
        out["toolCalls"].append({"name": item.get("name"), "arguments": _args(item.get("arguments"))})
    elif kind in ("response.completed", "response.incomplete", "response.failed"):
        response = doc.get("response") or {}
        out["finish"] = response.get("status")
        u = response.get("usage")
        if u:
            out["usage"] = {"input": u.get("input_tokens"), "output": u.get("output_tokens")}


def _reduce_messages(doc: dict[str, Any], out: dict[str, Any], calls: dict[Any, dict[str, str]]) -> None:
    kind = doc.get("type")
    usage = None
    if kind == "message_start":
        usage = (doc.get("message") or {}).get("usage")
    elif kind == "message_delta":
        usage = doc.get("usage")
        out["finish"] = (doc.get("delta") or {}).get("stop_reason") or out["finish"]
    elif kind == "content_block_start" and (doc.get("content_block") or {}).get("type") == "tool_use":
        calls[doc.get("index")] = {"name": doc["content_block"].get("name", ""), "arguments": ""}
    elif kind == "content_block_delta":
        delta = doc.get("delta") or {}
        out["text"] += delta.get("text") or ""
        if delta.get("type") == "input_json_delta" and doc.get("index") in calls:
            calls[doc["index"]]["arguments"] += delta.get("partial_json") or ""
    if usage:
        merged = dict(out["usage"] or {})
        if usage.get("input_tokens") is not None:
            merged["input"] = usage["input_tokens"]
        if usage.get("output_tokens") is not None:
            merged["output"] = usage["output_tokens"]
        out["usage"] = merged


def _gemini_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in ((candidate.get("content") or {}).get("parts") or ()) if isinstance(p, dict)]


def _reduce_gemini(doc: dict[str, Any], out: dict[str, Any]) -> None:
    for candidate in doc.get("candidates") or ():
        for part in _gemini_parts(candidate):
            out["text"] += part.get("text") or ""
            if part.get("functionCall"):
                call = part["functionCall"]
                out["toolCalls"].append({"name": call.get("name"), "arguments": call.get("args")})
        out["finish"] = candidate.get("finishReason") or out["finish"]
    usage = doc.get("usageMetadata")
    if usage and usage.get("candidatesTokenCount") is not None:
        out["usage"] = {"input": usage.get("promptTokenCount"), "output": usage["candidatesTokenCount"]}

"""Chat Completions streams read by their clients, against the audit's verdict.

The openai Python SDK's `chat.completions.stream()`, the npm SDK's `ChatCompletionStream` and
the AI SDK's OpenAI provider read a chunk's choices and tool calls by their place, and raise
or lose output where a stream breaks what they rely on. The bodies are streams recorded from
aimock, LiteLLM (over aimock, over the demo gateway and with `mock_response`) and the demo
gateway, as they came and with seeded mutations (a chunk dropped, repeated or moved; a
choice's or a tool call's index, id, type, name or `function` changed or taken out; `choices`,
`delta`, `content` or `finish_reason` of another type; arguments broken). The audit must miss
nothing a client raises on or loses, but what the API's schema allows and only one client
refuses (below).
"""

from __future__ import annotations

import json
import pathlib
import random
import warnings
from typing import Any

import httpx
import openai
import pytest
from clients import node_json, verdict

HERE = pathlib.Path(__file__).parent
RECORDED = sorted((HERE / "data" / "chat").glob("*.sse"))
MUTANTS_PER_BODY = 30
# What the audit says instead of malformed_frame, for what a client raises on or loses.
SAYS = {"malformed_frame", "invalid_tool_arguments", "missing_finish_reason"}
# One client's strictness about what the schema makes optional (only the npm helper's
# finalChatCompletion raises), and the Python helper's refusal to parse a `length` or
# `content_filter` answer: not the stream's fault.
NOT_JUDGED = (
    "missing role for choice",
    "missing `type`",
    "].type",
    "LengthFinishReason",
    "ContentFilterFinish",
)


def frames(body: bytes) -> list[Any]:
    out: list[Any] = []
    for frame in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in frame.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:].decode()
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def render(docs: list[Any]) -> bytes:
    return b"".join(b"data: " + (d if isinstance(d, str) else json.dumps(d)).encode() + b"\n\n" for d in docs)


def _calls(doc: Any) -> list[dict[str, Any]]:
    choices = doc.get("choices") if isinstance(doc, dict) else None
    out: list[dict[str, Any]] = []
    for c in choices if isinstance(choices, list) else []:
        delta = c.get("delta") if isinstance(c, dict) else None
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        out += [t for t in calls if isinstance(t, dict)] if isinstance(calls, list) else []
    return out


def _choice(doc: Any) -> dict[str, Any] | None:
    choices = doc.get("choices") if isinstance(doc, dict) else None
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None


def mutate(docs: list[Any], rng: random.Random) -> list[Any]:
    docs = json.loads(json.dumps(docs))
    for _ in range(rng.choice((1, 1, 2))):
        chunks = [k for k, d in enumerate(docs) if isinstance(d, dict)]
        if not chunks:
            break
        i = rng.choice(chunks)
        calls = [c for d in docs for c in _calls(d)]
        choice = _choice(docs[i])
        op = rng.choice(
            (
                "drop",
                "repeat",
                "swap",
                "call_index",
                "call_id",
                "call_name",
                "call_function",
                "call_type",
                "args",
                "choices",
                "choice_index",
                "delta",
                "content",
                "finish",
            )
        )
        if op == "drop":
            del docs[i]
        elif op == "repeat":
            docs.insert(i, json.loads(json.dumps(docs[i])))
        elif op == "swap" and i + 1 < len(docs):
            docs[i], docs[i + 1] = docs[i + 1], docs[i]
        elif op == "call_index" and calls:
            rng.choice(calls)["index"] = rng.choice((1, 2, -1, 0.0, "0", None))
        elif op == "call_id" and calls:
            rng.choice(calls)["id"] = rng.choice(("call_other", "", 7))
        elif op == "call_name" and calls:
            call = rng.choice(calls)
            if isinstance(call.get("function"), dict):
                call["function"]["name"] = rng.choice(("lookup", "", 3, None))
        elif op == "call_function" and calls:
            call = rng.choice(calls)
            if rng.random() < 0.5:
                call.pop("function", None)
            else:
                call["function"] = None
        elif op == "call_type" and calls:
            rng.choice(calls)["type"] = rng.choice(("", "tool"))
        elif op == "args" and calls:
            call = rng.choice(calls)
            if isinstance(call.get("function"), dict):
                call["function"]["arguments"] = rng.choice(("}", '{"x": 1}{', 5))
        elif op == "choices":
            docs[i]["choices"] = rng.choice((None, "x", {"index": 0}))
        elif op == "choice_index" and choice is not None:
            choice["index"] = rng.choice((1, -1, None, "0", 0.0))
        elif op == "delta" and choice is not None:
            if rng.random() < 0.5:
                choice.pop("delta", None)
            else:
                choice["delta"] = None
        elif op == "content" and choice is not None and isinstance(choice.get("delta"), dict):
            choice["delta"]["content"] = rng.choice((5, ["a"], {"t": 1}))
        elif op == "finish" and choice is not None:
            choice["finish_reason"] = rng.choice((3, None, "stop", "tool_calls"))
    return docs


def sent(docs: list[Any]) -> tuple[str, str]:
    """The content and the tool arguments the chunks carry, up to `[DONE]`."""
    text, args = "", ""
    for d in docs:
        if d == "[DONE]":
            break
        choices = d.get("choices") if isinstance(d, dict) else None
        for c in choices if isinstance(choices, list) else []:
            delta = c.get("delta") if isinstance(c, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                text += delta["content"]
        for call in _calls(d):
            function = call.get("function")
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                args += function["arguments"]
    return text, args


def audit(body: bytes) -> tuple[str, list[str]]:
    return verdict("chat_completions", body, include_usage=True)


def python_helper(body: bytes) -> dict[str, Any]:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    client = openai.OpenAI(
        api_key="sk",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx.Client(transport=transport),
        max_retries=0,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic's, on fields of odd types
            with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as s:
                for _ in s:
                    pass
                done = s.get_final_completion()
    except Exception as exc:  # what the helper raises is the point, whatever its type
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        client.close()
    text = "".join(str(c.message.content or "") + str(c.message.refusal or "") for c in done.choices)
    args = "".join(str(t.function.arguments or "") for c in done.choices for t in c.message.tool_calls or [])
    return {"error": None, "text": text, "args": args}


def _bad(result: dict[str, Any], text: str, args: str) -> str | None:
    """Why the client did not read the stream whole (None: it did, or only NOT_JUDGED)."""
    error = result.get("error")
    if error is not None:
        return None if any(word in error for word in NOT_JUDGED) else error
    if len(result["text"]) < len(text) or len(result["args"]) < len(args):
        return f"lost output: {result['text']!r} {result['args']!r}"
    return None


def test_the_audit_misses_nothing_a_client_raises_on_or_loses(tmp_path: pathlib.Path) -> None:
    assert len(RECORDED) >= 12
    cases: list[tuple[str, list[Any]]] = []
    for path in RECORDED:
        rng = random.Random(path.stem)
        docs = frames(path.read_bytes())
        cases += [(f"{path.stem}~{k}", mutate(docs, rng)) for k in range(MUTANTS_PER_BODY)]
    files = []
    for n, (_, docs) in enumerate(cases):
        files.append(tmp_path / f"{n}.sse")
        files[-1].write_bytes(render(docs))
    node = node_json("chat_helpers.mjs", list(map(str, files)))
    missed, broken = [], 0
    for (name, docs), file, js in zip(cases, files, node, strict=True):
        body = file.read_bytes()
        text, args = sent(docs)
        why = [w for r in (python_helper(body), js["npm"], js["ai"]) if (w := _bad(r, text, args))]
        broken += bool(why)
        outcome, anomalies = audit(body)
        if why and not (SAYS.intersection(anomalies) or outcome in ("upstream_error", "truncated")):
            missed.append((name, outcome, anomalies, why))
    assert not missed, "\n".join(map(str, missed[:10]))
    # The mutants are no formality: many break a client, many do not.
    assert len(cases) // 5 < broken < len(cases) * 4 // 5, broken


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_a_recorded_stream_as_it_came(path: pathlib.Path) -> None:
    body = path.read_bytes()
    text, args = sent(frames(body))
    (js,) = node_json("chat_helpers.mjs", [str(path)])
    assert [_bad(r, text, args) for r in (python_helper(body), js["npm"], js["ai"])] == [None, None, None]
    assert audit(body) == ("complete", [])

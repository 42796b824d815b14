"""Anthropic Messages streams read by the SDKs' stream helpers, against the audit's verdict.

Both helpers (Python's `client.messages.stream()`, the npm SDK's `MessageStream`) build the
message from the events; they raise where its order breaks, and lose text where an event
lands on the wrong block. The bodies are streams recorded from aimock and from LiteLLM's
`/v1/messages` over the demo gateway, and the examples of Anthropic's streaming
documentation (text, thinking with its signature, tools, citations, redacted thinking, a
server tool, an error), as they came and with seeded mutations (an event dropped, repeated,
moved or sent before the start; an index, a block's or a delta's type changed; usage taken
out; broken tool JSON). The audit must miss nothing a helper raises on or loses. (It says
more than they do in places: an event before `message_start`, on which the Python helper
raised before anthropic 2.x, and an empty block started again; stream-shapes.md lists them.)
"""

from __future__ import annotations

import json
import pathlib
import random
import warnings
from typing import Any

import anthropic
import httpx2
import pytest
from clients import node_json, verdict

HERE = pathlib.Path(__file__).parent
RECORDED = sorted((HERE / "data" / "messages").glob("*.sse"))
MUTANTS_PER_BODY = 30
# What says the stream is not what the helpers read: the helpers raise at an error event and at
# a cut stream too, and at tool input that is no JSON (the audit's invalid_tool_arguments).
SAYS = {"malformed_frame", "invalid_tool_arguments"}


def events(body: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for frame in body.split(b"\n\n")
        for line in frame.split(b"\n")
        if line.startswith(b"data: ")
    ]


def render(docs: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + str(d.get("type")).encode() + b"\ndata: " + json.dumps(d).encode() + b"\n\n"
        for d in docs
    )


_DELTAS = {
    "text_delta": {"type": "text_delta", "text": "X"},
    "thinking_delta": {"type": "thinking_delta", "thinking": "T"},
    "input_json_delta": {"type": "input_json_delta", "partial_json": '{"q": 1}'},
    "signature_delta": {"type": "signature_delta", "signature": "S"},
}
_BLOCKS = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
    "tool_use": {"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}},
}


def mutate(docs: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    docs = json.loads(json.dumps(docs))
    for _ in range(rng.choice((1, 1, 2))):
        i = rng.randrange(len(docs))
        indexed = [d for d in docs if "index" in d]
        starts = [d for d in docs if d.get("type") == "content_block_start"]
        deltas = [d for d in docs if d.get("type") == "content_block_delta"]
        op = rng.choice(
            (
                "drop",
                "repeat",
                "swap",
                "move",
                "before_start",
                "index",
                "index_form",
                "block_type",
                "delta_type",
                "no_usage",
                "bad_json",
                "stop_unstarted",
                "start_again",
                "second_start",
            )
        )
        if op == "drop":
            del docs[i]
        elif op == "repeat":
            docs.insert(i, json.loads(json.dumps(docs[i])))
        elif op == "swap" and i + 1 < len(docs):
            docs[i], docs[i + 1] = docs[i + 1], docs[i]
        elif op == "move":
            docs.insert(rng.randrange(len(docs)), docs.pop(i))
        elif op == "before_start":
            docs.insert(0, json.loads(json.dumps(rng.choice(docs))))
        elif op == "index" and indexed:
            rng.choice(indexed)["index"] += rng.choice((1, -1, 2))
        elif op == "index_form" and indexed:
            d = rng.choice(indexed)
            d["index"] = rng.choice((float(d["index"]), str(d["index"]), d["index"] + 0.5))
        elif op == "block_type" and starts:
            rng.choice(starts)["content_block"] = dict(_BLOCKS[rng.choice(list(_BLOCKS))])
        elif op == "delta_type" and deltas:
            rng.choice(deltas)["delta"] = dict(_DELTAS[rng.choice(list(_DELTAS))])
        elif op == "no_usage":
            target = rng.choice(
                [d for d in docs if d.get("type") in ("message_start", "message_delta")] or [{}]
            )
            (target.get("message") if "message" in target else target).pop("usage", None)
        elif op == "bad_json":
            json_deltas = [d for d in deltas if d["delta"].get("type") == "input_json_delta"]
            if json_deltas:
                rng.choice(json_deltas)["delta"]["partial_json"] = rng.choice(('{"a": tru', "}}", '{"a" 1'))
        elif op == "stop_unstarted":
            docs.insert(i, {"type": "content_block_stop", "index": 7})
        elif op == "start_again" and starts:
            docs.insert(i, json.loads(json.dumps(rng.choice(starts))))
        elif op == "second_start" and docs[0].get("type") == "message_start":
            docs.insert(i, json.loads(json.dumps(docs[0])))
    return docs


def sent_text(docs: list[dict[str, Any]]) -> list[str]:
    """The text and thinking each delta carries: a helper that read the stream whole has it."""
    out = []
    for d in docs:
        delta = d.get("delta") if d.get("type") == "content_block_delta" else None
        if isinstance(delta, dict) and delta.get("type") in ("text_delta", "thinking_delta"):
            piece = delta.get("text") or delta.get("thinking")
            if isinstance(piece, str) and piece:
                out.append(piece)
    return out


def audit(body: bytes) -> tuple[str, list[str]]:
    return verdict("messages", body)


def python_helper(body: bytes) -> tuple[str | None, str]:
    """(what the helper raised or None, the final message's text and thinking)."""
    transport = httpx2.MockTransport(
        lambda _: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    client = anthropic.Anthropic(
        api_key="x",
        base_url="http://127.0.0.1:9",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic's, on fields of odd types
            with client.messages.stream(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as s:
                for _ in s:
                    pass
                message = s.get_final_message()
    except Exception as exc:  # what the helper raises is the point, whatever its type
        return f"{type(exc).__name__}: {exc}"[:200], ""
    finally:
        client.close()
    blocks = [b.model_dump(warnings=False) for b in message.content]
    return None, "".join(str(b.get("text") or "") + str(b.get("thinking") or "") for b in blocks)


def npm_helper(files: list[pathlib.Path]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = node_json("messages_helper.mjs", list(map(str, files)))
    return results


def _judged(outcome: str, anomalies: list[str]) -> bool:
    return bool(SAYS.intersection(anomalies)) or outcome in ("upstream_error", "truncated")


def test_the_audit_misses_nothing_a_helper_raises_on_or_loses(tmp_path: pathlib.Path) -> None:
    assert len(RECORDED) >= 16
    cases: list[tuple[str, list[dict[str, Any]]]] = []
    for path in RECORDED:
        rng = random.Random(path.stem)
        docs = events(path.read_bytes())
        cases += [(f"{path.stem}~{k}", mutate(docs, rng)) for k in range(MUTANTS_PER_BODY)]
    files = []
    for n, (_, docs) in enumerate(cases):
        files.append(tmp_path / f"{n}.sse")
        files[-1].write_bytes(render(docs))
    npm = npm_helper(files)
    missed, raised_count = [], 0
    for (name, docs), file, js in zip(cases, files, npm, strict=True):
        body = file.read_bytes()
        py_raised, py_text = python_helper(body)
        raised = py_raised is not None or not js["ok"]
        raised_count += raised
        texts = [t for t in (py_text if py_raised is None else None, js.get("text")) if t is not None]
        lost = any(piece not in text for text in texts for piece in sent_text(docs))
        outcome, anomalies = audit(body)
        if (raised or lost) and not _judged(outcome, anomalies):
            missed.append((name, outcome, anomalies, py_raised, js.get("error"), lost))
    assert not missed, "\n".join(map(str, missed[:10]))
    # The mutants are no formality: many break the helpers, many do not.
    assert len(cases) // 5 < raised_count < len(cases) * 4 // 5, raised_count


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_a_recorded_stream_as_it_came(path: pathlib.Path) -> None:
    body = path.read_bytes()
    py_raised, _ = python_helper(body)
    (js,) = npm_helper([path])
    if path.stem == "docs_err":  # an overloaded_error mid-stream: both raise, as they should
        assert py_raised is not None and not js["ok"]
        assert audit(body) == ("upstream_error", ["error_event"])
        return
    assert py_raised is None and js["ok"], (py_raised, js)
    assert audit(body) == ("complete", [])

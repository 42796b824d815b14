"""Responses streams read by the openai SDKs' stream helpers, against the audit's verdict.

Both helpers (Python's `client.responses.stream()`, the npm SDK's `ResponseStream`) build the
response from the events and raise where their order breaks; their final response is the
terminal event's, so what it leaves out of the streamed text and tool arguments is lost. The
audit calls exactly the streams a helper raises on or loses output from `malformed_frame`.
The bodies are streams recorded from real servers (LiteLLM, its Responses bridge over a Chat
upstream, aimock, llmock, the demo gateway), as they came and with seeded mutations (an event
dropped, repeated or moved; an index, an item's type, its `content` or `summary` changed; the
final `output` emptied or short of an item; the end named `response.done`), each read by the
real Python helper in this process and the real npm helper in Node.
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
RECORDED = sorted((HERE / "data" / "responses").glob("*.sse"))
MUTANTS_PER_BODY = 40


def events(body: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for frame in body.split(b"\n\n")
        for line in frame.split(b"\n")
        if line.startswith(b"data: ") and line[6:] != b"[DONE]"
    ]


def render(docs: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + str(d.get("type")).encode() + b"\ndata: " + json.dumps(d).encode() + b"\n\n"
        for d in docs
    )


def mutate(docs: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    docs = json.loads(json.dumps(docs))
    for _ in range(rng.choice((1, 1, 2))):
        i = rng.randrange(len(docs))
        doc = docs[i]
        item = doc.get("item") if isinstance(doc.get("item"), dict) else None
        op = rng.choice(
            (
                "drop",
                "repeat",
                "swap",
                "output_index",
                "content_index",
                "type",
                "content",
                "summary",
                "final_output",
                "done_event",
            )
        )
        response = doc.get("response") if doc.get("type") == "response.completed" else None
        output = response.get("output") if isinstance(response, dict) else None
        if op == "drop":
            del docs[i]
        elif op == "repeat":
            docs.insert(i, json.loads(json.dumps(doc)))
        elif op == "swap" and i + 1 < len(docs):
            docs[i], docs[i + 1] = docs[i + 1], docs[i]
        elif op == "output_index" and "output_index" in doc:
            doc["output_index"] += rng.choice((1, -1, 3))
        elif op == "content_index" and "content_index" in doc:
            doc["content_index"] += rng.choice((1, -1))
        elif op == "type" and item is not None:
            item["type"] = rng.choice(("message", "reasoning", "function_call", "web_search_call"))
        elif op == "content" and item is not None:
            item.pop("content", None)
        elif op == "summary" and item is not None:
            item.pop("summary", None)
        elif op == "final_output" and isinstance(output, list) and output:
            del output[rng.randrange(len(output)) :]  # ChatGPT's Codex backend sends `[]`
        elif op == "done_event" and response is not None:
            doc["type"] = "response.done"  # some gateways' name for the end
    for n, doc in enumerate(docs):  # numbered as sent: a sequence_gap is not what is tested
        if "sequence_number" in doc:
            doc["sequence_number"] = n
    return docs


def bodies() -> list[tuple[str, bytes, tuple[str, str]]]:
    """Each recording and its mutants, with the recording's whole answer."""
    out = []
    for path in RECORDED:
        body = path.read_bytes()
        whole = answer(body)
        out.append((path.stem, body, whole))
        rng = random.Random(path.stem)
        for k in range(MUTANTS_PER_BODY):
            out.append((f"{path.stem}~{k}", render(mutate(events(body), rng)), whole))
    return out


def audit(body: bytes) -> tuple[str, list[str]]:
    return verdict("responses", body)


def answer(body: bytes) -> tuple[str, str]:
    """The text and the tool arguments of a recording's whole answer (its completed response)."""
    text = args = ""
    for doc in events(body):
        response = doc.get("response") if doc.get("type") == "response.completed" else None
        for item in response.get("output") or [] if isinstance(response, dict) else []:
            if item.get("type") == "function_call":
                args += item.get("arguments") or ""
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                text += part.get("text") or "" if part.get("type") == "output_text" else ""
    return text, args


def lost(text: str, args: str, whole: tuple[str, str]) -> str | None:
    """What a final response with `text` and `args` lacks of the recording's whole answer."""
    if len(text) < len(whole[0]) or len(args) < len(whole[1]):
        return f"lost output: {text!r} {args!r}"
    return None


def python_helper(body: bytes, whole: tuple[str, str]) -> str | None:
    """What the Python helper raised or lost, None if it read the stream whole."""
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    client = openai.OpenAI(
        api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=httpx.Client(transport=transport)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic's on items of odd types
            with client.responses.stream(model="m", input="hi") as stream:
                for _ in stream:
                    pass
                final = stream.get_final_response()
                text = final.output_text
                args = "".join(
                    str(getattr(o, "arguments", "") or "")
                    for o in final.output
                    if getattr(o, "type", None) == "function_call"
                )
    except Exception as exc:  # what the helper raises is the point, whatever its type
        return f"{type(exc).__name__}: {exc}"[:200]
    finally:
        client.close()
    return lost(text, args, whole)


def npm_helper(files: list[pathlib.Path], wholes: list[tuple[str, str]]) -> list[str | None]:
    results = node_json("responses_helper.mjs", list(map(str, files)))
    return [
        lost(r["text"], r["args"], whole) if r["ok"] else r["error"]
        for whole, r in zip(wholes, results, strict=True)
    ]


def test_the_audit_calls_malformed_exactly_what_a_helper_raises_on_or_loses(tmp_path: pathlib.Path) -> None:
    assert len(RECORDED) >= 8
    cases = bodies()
    files = []
    for n, (_, body, _) in enumerate(cases):
        files.append(tmp_path / f"{n}.sse")
        files[-1].write_bytes(body)
    npm = npm_helper(files, [whole for _, _, whole in cases])
    wrong = []
    raised_count = 0
    for (name, body, whole), npm_raised in zip(cases, npm, strict=True):
        outcome, anomalies = audit(body)
        py_raised = python_helper(body, whole)
        raised = py_raised is not None or npm_raised is not None
        raised_count += raised
        # A failed or cut response raises in the helpers too: `upstream_error`, `truncated`.
        said = "malformed_frame" in anomalies or outcome in ("upstream_error", "truncated")
        if raised != said:
            wrong.append((name, outcome, anomalies, py_raised, npm_raised))
    assert not wrong, "\n".join(map(str, wrong[:10]))
    # The mutants are no formality: many break the helpers, many do not.
    assert len(cases) // 5 < raised_count < len(cases) - len(RECORDED), raised_count


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_a_recorded_stream_as_it_came(path: pathlib.Path) -> None:
    body = path.read_bytes()
    whole = answer(body)
    assert whole != ("", "")  # each recording has an answer to lose
    assert python_helper(body, whole) is None
    (npm_raised,) = npm_helper([path], [whole])
    if "reason" in path.stem:
        # LiteLLM's Responses bridge over a reasoning model adds a reasoning item with no
        # `summary` list and sends its summary text without a part: the npm helper raises.
        assert npm_raised is not None
        assert audit(body) == ("complete", ["malformed_frame"])
    else:
        assert npm_raised is None
        assert audit(body) == ("complete", [])

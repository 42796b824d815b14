"""Usage or a finish reason in more than one Chat chunk, and a usage chunk without `choices`,
against their clients.

The openai SDKs keep the last `usage` they see. LangChain's `ChatOpenAI` (with `stream_usage`)
adds up the usage of every chunk, so a gateway that reports it twice (on the finish chunk and in
the usage chunk) or as a running total on every chunk (vLLM's `continuous_usage_stats`) makes
its callers' token counts, and what finance bills from them, two or more times too high. The
audit called both `complete` with no anomaly (an outside review of the wrapper clients); now
`repeated_usage`. A usage chunk with no `choices` at all fails both SDKs' stream helpers and the
AI SDK, as `"choices": null` does: `malformed_frame` now, as that one already was. Some
OpenRouter models send two finish chunks, the second with the usage: LangChain joins the
reasons into `stopstop`, which code that tests the finish reason misreads
(`repeated_finish_reason`).

Each body is served by a recorded upstream, through the real `serve`, to the real clients.
"""

from __future__ import annotations

import copy
import pathlib
import uuid
from typing import Any

import httpx
import openai
import pytest
import servers
from clients import node_json
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from test_chat_helpers import frames, python_helper, render

HERE = pathlib.Path(__file__).parent
RECORDED = frames((HERE / "data" / "chat" / "gw_healthy.sse").read_bytes())
USAGE = next(d["usage"] for d in RECORDED if isinstance(d, dict) and d.get("usage"))


def _is_finish(doc: Any) -> bool:
    return isinstance(doc, dict) and any(c.get("finish_reason") for c in doc.get("choices") or [])


def _is_content(doc: Any) -> bool:
    return isinstance(doc, dict) and any(
        (c.get("delta") or {}).get("content") for c in doc.get("choices") or []
    )


def twice() -> list[Any]:
    """The usage on the finish chunk as well as in its own chunk."""
    docs = copy.deepcopy(RECORDED)
    next(d for d in docs if _is_finish(d))["usage"] = dict(USAGE)
    return docs


def running() -> list[Any]:
    """A running total on every content chunk, then the usage chunk (continuous usage stats)."""
    docs = copy.deepcopy(RECORDED)
    done = 0
    for d in docs:
        if _is_content(d):
            done += 1
            d["usage"] = {
                "prompt_tokens": USAGE["prompt_tokens"],
                "completion_tokens": done,
                "total_tokens": USAGE["prompt_tokens"] + done,
            }
    return docs


def no_choices() -> list[Any]:
    """The usage chunk as OpenAI's, but without its (empty) `choices`."""
    docs = copy.deepcopy(RECORDED)
    del next(d for d in docs if isinstance(d, dict) and d.get("choices") == [] and d.get("usage"))["choices"]
    return docs


def two_finishes() -> list[Any]:
    """OpenRouter's (langchain#38226): the finish chunk, then a finish chunk with the usage."""
    docs = copy.deepcopy(RECORDED)
    usage_chunk = next(d for d in docs if isinstance(d, dict) and d.get("choices") == [] and d.get("usage"))
    usage_chunk["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    return docs


BODIES = {
    "once": RECORDED,
    "twice": twice(),
    "running": running(),
    "no_choices": no_choices(),
    "two_finishes": two_finishes(),
}


@pytest.fixture(scope="module")
def proxy() -> Any:
    bodies = {name: render(docs) for name, docs in BODIES.items()}
    with (
        servers.replay(lambda path: bodies[path.split("/")[1]]) as upstream,
        servers.serve(upstream) as running_,
    ):
        yield running_


def _langchain(base: str, trace: str) -> AIMessageChunk:
    """What LangChain makes of the stream: its chunks added up, as its callers do."""
    with httpx.Client() as http:
        llm = ChatOpenAI(
            model="m",
            api_key="sk",  # type: ignore[arg-type]
            base_url=base,
            stream_usage=True,
            max_retries=0,
            http_client=http,
            default_headers={"x-request-id": trace},
        )
        total: AIMessageChunk | None = None
        for chunk in llm.stream("hi"):
            total = chunk if total is None else total + chunk
    assert total is not None
    return total


def _langchain_total(base: str, trace: str) -> int:
    usage = _langchain(base, trace).usage_metadata
    assert usage is not None
    return int(usage["total_tokens"])


def _sdk_last_usage(base: str, trace: str) -> int:
    """What the openai SDK's stream gives a caller that keeps the last `usage`."""
    with openai.OpenAI(api_key="sk", base_url=base, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": trace},
        )
        last = [c.usage.total_tokens for c in stream if c.usage]
    return last[-1]


def _verdict(proxy: servers.Serve, trace: str) -> tuple[str, list[str]]:
    line = proxy.record(trace)
    return line["outcome"], line["anomalies"]


@pytest.mark.parametrize(("name", "times"), [("once", 1), ("twice", 2)])
def test_langchain_counts_usage_once_per_chunk_that_carries_it(proxy: Any, name: str, times: int) -> None:
    base = f"{proxy.url}/{name}/v1"
    trace = uuid.uuid4().hex
    assert _langchain_total(base, trace) == times * USAGE["total_tokens"]
    assert _sdk_last_usage(base, uuid.uuid4().hex) == USAGE["total_tokens"]
    outcome, anomalies = _verdict(proxy, trace)
    assert outcome == "complete"
    assert anomalies == (["repeated_usage"] if times > 1 else [])


def test_a_running_total_on_every_chunk(proxy: Any) -> None:
    base = f"{proxy.url}/running/v1"
    trace = uuid.uuid4().hex
    assert _langchain_total(base, trace) > 3 * USAGE["total_tokens"]
    assert _sdk_last_usage(base, uuid.uuid4().hex) == USAGE["total_tokens"]
    assert _verdict(proxy, trace) == ("complete", ["repeated_usage"])


def test_a_usage_chunk_without_choices(proxy: Any, tmp_path: pathlib.Path) -> None:
    body = render(BODIES["no_choices"])
    file = tmp_path / "no_choices.sse"
    file.write_bytes(body)
    (js,) = node_json("chat_helpers.mjs", [str(file)])
    assert "not iterable" in str(python_helper(body)["error"])
    assert "not iterable" in str(js["npm"]["error"])
    assert "validation" in str(js["ai"]["error"]).lower()
    trace = uuid.uuid4().hex
    assert _sdk_last_usage(f"{proxy.url}/no_choices/v1", trace) == USAGE["total_tokens"]
    assert _verdict(proxy, trace) == ("complete", ["malformed_frame"])


def test_two_finish_chunks(proxy: Any) -> None:
    base = f"{proxy.url}/two_finishes/v1"
    trace = uuid.uuid4().hex
    message = _langchain(base, trace)
    assert message.response_metadata["finish_reason"] == "stopstop"
    assert message.usage_metadata is not None
    assert message.usage_metadata["total_tokens"] == USAGE["total_tokens"]  # the usage came once
    with (
        openai.OpenAI(api_key="sk", base_url=base, max_retries=0) as client,
        client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as s,
    ):
        done = s.get_final_completion()
    assert done.choices[0].finish_reason == "stop"
    assert _verdict(proxy, trace) == ("complete", ["repeated_finish_reason"])

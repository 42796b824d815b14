"""A text-generation-inference stream that ends cleanly before its last frame, read by
huggingface_hub's InferenceClient (the client of Hugging Face's own docs for TGI).

The client hands on the partial text as the whole answer when the body ends before the frame
with `generated_text`: its user cannot tell the answer was cut. Through the proxy it gets the
same tokens, and the record says `truncated` (a route with no dialect said `complete`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import servers

pytestmark = pytest.mark.interop

STREAMS = Path(__file__).parent.parent / "unit" / "conformance" / "streams"
CUT = (STREAMS / "tgi_stream_cut.sse").read_bytes()
WHOLE = (STREAMS / "tgi_stream.sse").read_bytes()
ERROR = (STREAMS / "tgi_stream_error.sse").read_bytes()


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[str, servers.Serve]]:
    servers.require_all()
    answer = lambda path: CUT if path.startswith("/cut/") else ERROR if path.startswith("/oom/") else WHOLE  # noqa: E731
    with servers.replay(answer) as upstream, servers.serve(upstream) as proxy:
        yield upstream, proxy


def generate(base: str, trace: str, *, details: bool) -> list[object]:
    from huggingface_hub import InferenceClient

    client = InferenceClient(
        model=base + "/generate_stream", headers={"X-Client-Request-Id": trace}, timeout=10
    )
    return list(
        client.text_generation("What is open source?", stream=True, details=details, max_new_tokens=20)
    )


def test_the_client_hands_on_a_cut_answer_and_the_record_says_truncated(
    proxied: tuple[str, servers.Serve],
) -> None:
    upstream, proxy = proxied
    direct = generate(upstream + "/cut", "direct", details=False)
    through = generate(proxy.url + "/cut", "tgi-cut", details=False)
    assert through == direct == ["100", "%", " open"]  # no error, no sign of the cut
    record = proxy.record("tgi-cut")
    assert (record["route"], record["outcome"], record["end_reason"]) == (
        "tgi",
        "truncated",
        "upstream_eof",
    ), record
    assert "no last frame (`generated_text`)" in record["reasons"][0]


def test_a_whole_answer_is_complete_with_its_finish_reason_and_counts(
    proxied: tuple[str, servers.Serve],
) -> None:
    _, proxy = proxied
    got = generate(proxy.url, "tgi-whole", details=True)
    last = got[-1]
    assert last.generated_text == "100% open" and last.details.finish_reason == "eos_token"  # type: ignore[attr-defined]
    record = proxy.record("tgi-whole")
    assert (record["route"], record["outcome"], record["anomalies"]) == ("tgi", "complete", []), record
    assert (record["finish_reasons"], record["usage"]) == (
        ["eos_token"],
        {"prompt_tokens": 7, "completion_tokens": 4},
    )


def test_an_error_frame_raises_in_the_client_and_is_an_upstream_error(
    proxied: tuple[str, servers.Serve],
) -> None:
    from huggingface_hub.errors import GenerationError

    _, proxy = proxied
    with pytest.raises(GenerationError):
        generate(proxy.url + "/oom", "tgi-oom", details=False)
    record = proxy.record("tgi-oom")
    assert (record["route"], record["outcome"]) == ("tgi", "upstream_error"), record

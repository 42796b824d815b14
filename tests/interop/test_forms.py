"""Forms asking for a stream (transcriptions), from the official openai SDK and curl, to the npm
mock server @copilotkit/aimock, through the real `serve`: the proxy reads the form's `model` and
`stream` fields, so an ordinary answer to `stream=true` is `not_streamed`, as for chat.

aimock streams a transcription for `stream=true` (OpenAI's `transcript.text.delta` events, then
`[DONE]`) unless the model is whisper-1, which it answers with one JSON document: what OpenAI
does, as whisper-1 ignores `stream`.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import servers

pytestmark = pytest.mark.interop

openai = pytest.importorskip("openai")
AUDIO = bytes(range(256)) * 64  # what the form carries as its file: never read by the proxy


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Serve]:
    tmp = tmp_path_factory.mktemp("forms")
    with servers.aimock(tmp) as upstream, servers.serve(upstream) as proxy:
        yield proxy


def _sdk(proxy: servers.Serve, model: str, stream: bool) -> tuple[str, Any]:
    trace = uuid.uuid4().hex
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=servers.API_KEY, max_retries=0)
    got = client.audio.transcriptions.create(
        file=("speech.wav", AUDIO, "audio/wav"),
        model=model,
        stream=stream,
        extra_headers={"x-request-id": trace},
    )
    if stream:
        got = [event.type for event in got]
    return trace, got


def test_sdk_stream_is_audited_with_its_model(proxied: servers.Serve) -> None:
    trace, events = _sdk(proxied, "gpt-4o-transcribe", stream=True)
    assert events[-1] == "transcript.text.done" and "transcript.text.delta" in events
    line = proxied.record(trace)
    assert (line["event"], line["route"]) == ("stream_end", "audio_transcriptions")
    assert line["model"] == "gpt-4o-transcribe"
    assert (line["outcome"], line["anomalies"]) == ("complete", [])
    assert line["ttft_ms"] is not None


def test_sdk_stream_answered_with_a_document_is_not_streamed(proxied: servers.Serve) -> None:
    trace, events = _sdk(proxied, "whisper-1", stream=True)
    assert events == []  # the SDK's stream over a JSON document: not one event for the app
    line = proxied.record(trace)
    assert (line["event"], line["model"]) == ("stream_end", "whisper-1")
    assert "not_streamed" in line["anomalies"]


def test_sdk_without_stream_is_an_ordinary_request(proxied: servers.Serve) -> None:
    trace, answer = _sdk(proxied, "whisper-1", stream=False)
    assert answer.text.startswith("one two")
    line = proxied.record(trace)
    assert line["event"] == "request_end" and line["model"] == "whisper-1"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_form_with_the_file_first(proxied: servers.Serve, tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(AUDIO)
    trace = uuid.uuid4().hex
    out = subprocess.run(
        [
            "curl", "-sN", "--max-time", "20", proxied.url + "/v1/audio/transcriptions",
            "-H", f"Authorization: Bearer {servers.API_KEY}", "-H", f"x-request-id: {trace}",
            "-F", f"file=@{audio};type=audio/wav", "-F", "model=gpt-4o-mini-transcribe", "-F", "stream=true",
        ],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert out.endswith(b"data: [DONE]\n\n")
    line = proxied.record(trace)
    assert (line["event"], line["model"], line["outcome"]) == (
        "stream_end",
        "gpt-4o-mini-transcribe",
        "complete",
    )

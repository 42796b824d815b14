"""Frame skeletons keep an object's keys only when they are field names of the protocols.

Legacy Completions (and vLLM, llama.cpp) stream `top_logprobs` as objects keyed by the token
text itself: a skeleton kept any key that looked like a word, so "Patient" or "diagnosis" went
verbatim into the evidence and the `stream_evidence` log line. Now a key is kept only when it
is in field_names.FIELD_NAMES and not in an object keyed by data; token IDs and a token's bytes
are zeroed. The shape (how many keys, which numbers) is kept.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.field_names import FIELD_NAMES, OPAQUE
from sse_audit_proxy.core.skeleton import skeleton
from sse_audit_proxy.core.sse import Event
from sse_audit_proxy.tools.case import BadEvidence, _check_skeleton, materialise

STREAMS = Path(__file__).parent / "conformance" / "streams"
KEY_PLACEHOLDER = re.compile(r"<\d+>(?:#\d+)?")  # a key's length, the n-th of that length

# Token texts: any text (unicode, digits, spaces), words a completion may hold, and field
# names (a model may well write "text" or "content").
TOKENS = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["Patient", "diagnosis", "HIV", "positive", "hunter2", "1234", " the", "é", "日本"]),
    st.sampled_from(sorted(FIELD_NAMES)),
)


def keys_of(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in (k, *keys_of(v))]
    if isinstance(value, list):
        return [k for v in value for k in keys_of(v)]
    return []


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_of(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    return []


def completions_frame(tokens: list[str]) -> dict[str, Any]:
    """A legacy Completions chunk with logprobs, as OpenAI and vLLM send it."""
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "text": tokens[0],
                "logprobs": {
                    "tokens": tokens[:1],
                    "token_logprobs": [-0.1],
                    "top_logprobs": [{t: -0.1 * i for i, t in enumerate(tokens)}],
                    "text_offset": [0],
                },
                "finish_reason": None,
            }
        ],
    }


def shaped(frame: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(skeleton(Event("", orjson.dumps(frame), "")))
    return doc


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, min_size=1, max_size=8, unique=True))
def test_no_token_text_used_as_a_key_survives(tokens: list[str]) -> None:
    doc = shaped(completions_frame(tokens))
    alternatives = doc["data"]["choices"][0]["logprobs"]["top_logprobs"][0]
    assert len(alternatives) == len(tokens)  # the shape: one entry per alternative
    assert all(KEY_PLACEHOLDER.fullmatch(k) for k in alternatives), alternatives
    kept = set(keys_of(doc)) | set(strings_of(doc))
    assert not [t for t in tokens if t in kept and t not in FIELD_NAMES], doc
    # A token that is a field name may be a key elsewhere in the frame, never under the map.
    assert not set(tokens) & set(alternatives)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TOKENS, st.integers(0, 9) | st.text(max_size=4), min_size=1, max_size=6))
def test_unknown_keys_anywhere_are_placeholders(extra: dict[str, Any]) -> None:
    frame = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": extra}], "usage": extra}
    doc = shaped(frame)
    for key in keys_of(doc):
        assert key in FIELD_NAMES or KEY_PLACEHOLDER.fullmatch(key), key
    assert len(doc["data"]["usage"]) == len(extra)


def test_chat_logprobs_keep_their_field_names_and_lose_their_text() -> None:
    word = "diagnosis"
    entry = {"token": word, "logprob": -0.5, "bytes": list(word.encode())}
    frame = {
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": 0,
                "delta": {"content": word},
                "logprobs": {"content": [{**entry, "top_logprobs": [entry]}]},
            }
        ],
    }
    doc = shaped(frame)
    text = json.dumps(doc)
    assert word not in text and str(list(word.encode()))[1:-1] not in text
    content = doc["data"]["choices"][0]["logprobs"]["content"][0]
    assert content["token"] == "<9>" and content["bytes"] == [0] * 9 and content["logprob"] == -0.5
    alternative = content["top_logprobs"][0]  # (at MAX_DEPTH: its bytes are cut)
    assert (alternative["token"], alternative["logprob"]) == ("<9>", -0.5)


def test_token_ids_and_prompt_logprobs_of_vllm_hold_no_text() -> None:
    frame = {
        "object": "chat.completion.chunk",
        "prompt_token_ids": [9906, 11, 1917],
        "prompt_logprobs": [None, {"11": {"logprob": -1.0, "rank": 1, "decoded_token": ","}}],
        "choices": [{"index": 0, "delta": {"content": "x"}, "token_ids": [42]}],
    }
    doc = shaped(frame)["data"]
    assert doc["prompt_token_ids"] == [0, 0, 0]
    assert doc["choices"][0]["token_ids"] == [0]
    assert doc["prompt_logprobs"] == [None, {"<2>": {"logprob": -1.0, "rank": 1, "decoded_token": "<1>"}}]


def test_numbers_under_names_no_protocol_gives_are_zero() -> None:
    """Integers under an unknown key were kept, its name alone hidden: SGLang's native frames
    carry `output_ids` and, with logprobs asked for, the prompt's token IDs in
    `meta_info.input_token_logprobs` ([logprob, token ID, text]), which a public tokenizer turns
    back into the prompt and the completion (an outside review)."""
    frame = {
        "text": "Hello",
        "output_ids": [9906, 11, 424242],
        "meta_info": {"id": "r1", "input_token_logprobs": [[None, 71143, None], [-1.5, 424242, None]]},
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    doc = shaped(frame)["data"]
    assert "424242" not in orjson.dumps(doc).decode() and "71143" not in orjson.dumps(doc).decode()
    assert doc["<10>"] == [0, 0, 0]  # output_ids: its shape
    assert doc["<9>"] == {"<2>": "<2>", "<20>": [[None, 0, None], [0, 0, None]]}
    assert doc["choices"] == [{"index": 0, "delta": {"content": "<1>"}, "finish_reason": None}]


def test_code_a_model_wrote_is_its_length_and_an_error_code_its_word() -> None:
    """`code` is kept as a protocol word (an error's code), but Gemini's `executableCode.code`
    and a Responses code interpreter call's `code` are code the model wrote: a one-word program
    (`GCODEMARK`) went into evidence verbatim (an outside review)."""
    gemini = {
        "candidates": [
            {"content": {"parts": [{"executableCode": {"language": "PYTHON", "code": "GCODEMARK"}}]}}
        ]
    }
    item = {
        "type": "response.output_item.done",
        "item": {"type": "code_interpreter_call", "code": "RCODEMARK"},
    }
    done = {"type": "response.code_interpreter_call_code.done", "code": "DCODEMARK"}
    error = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"}
    texts = [orjson.dumps(shaped(doc)["data"]).decode() for doc in (gemini, item, done, error)]
    for text, mark in zip(texts, ("GCODEMARK", "RCODEMARK", "DCODEMARK"), strict=False):
        assert mark not in text and '"code":"<9>"' in text, text
    assert '"code":"rate_limit_exceeded"' in texts[3]


def test_a_data_map_s_values_are_not_read_as_protocol_fields() -> None:
    # In the caller's metadata, a key "status" is no protocol field: its word is not kept.
    doc = shaped({"type": "response.created", "response": {"metadata": {"status": "Patient", "type": "HIV"}}})
    assert doc["data"]["response"]["metadata"] == {"<6>": "<7>", "<4>": "<3>"}


def test_metadata_is_the_client_s_whatever_its_keys_say() -> None:
    # A key named `token` made it look like a logprob entry, whose protocol words are kept.
    meta = {"token": "abc", "status": "HIV-positive", "role": "oncology-patient", "n": 7}
    doc = shaped({"type": "response.created", "response": {"metadata": meta}})
    kept = json.dumps(doc)
    for word in ("HIV", "oncology", "token", "status", "role"):
        assert word not in kept
    assert doc["data"]["response"]["metadata"] == {"<5>": "<3>", "<6>": "<12>", "<4>": "<16>", "<1>": 0}


def test_evidence_asking_for_huge_numbered_keys_is_refused_before_anything_is_built() -> None:
    # "<N>#k" keys are N characters each once filled: counted like any placeholder.
    skeletons = [{"data": {f"<16000000>#{i}": 0 for i in range(2, 6)}}]
    with pytest.raises(BadEvidence, match="more than a frame can hold"):
        _check_skeleton(skeletons[0], "frames[0]")


def test_a_skeleton_with_placeholder_keys_replays_with_as_many_keys() -> None:
    doc = shaped(completions_frame(["abc", "xyz", "Patient"]))
    frame = orjson.loads(materialise(doc).split(b"data: ", 1)[1])
    alternatives = frame["choices"][0]["logprobs"]["top_logprobs"][0]
    assert sorted(map(len, alternatives)) == [3, 3, 7]


def protocol_keys_of(value: Any) -> list[str]:
    """keys_of, but not inside what a client or model wrote (OPAQUE: a request's JSON schema
    echoed in `response.created`), whose keys are never kept."""
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in (k, *(() if k in OPAQUE else protocol_keys_of(v)))]
    if isinstance(value, list):
        return [k for v in value for k in protocol_keys_of(v)]
    return []


def _stream_keys() -> set[str]:
    found: set[str] = set()
    for path in STREAMS.glob("*.sse"):
        for line in path.read_text().splitlines():
            if line.startswith("data:"):
                with contextlib.suppress(ValueError):
                    found.update(protocol_keys_of(json.loads(line[5:])))
    return found


def test_every_field_of_the_recorded_streams_is_kept() -> None:
    keys = _stream_keys()
    assert len(keys) > 50
    assert sorted(keys - FIELD_NAMES) == []


def _model_fields(roots: list[Any]) -> set[str]:
    import types
    import typing

    import pydantic

    seen: set[Any] = set()
    names: set[str] = set()

    def walk(t: Any) -> None:
        if typing.get_origin(t) is not None or isinstance(t, types.UnionType):
            for arg in typing.get_args(t):
                walk(arg)
        elif isinstance(t, type) and issubclass(t, pydantic.BaseModel) and t not in seen:
            seen.add(t)
            for name, f in t.model_fields.items():
                names.add(f.alias or name)
                walk(f.annotation)

    for root in roots:
        walk(root)
    return names


def test_every_field_the_sdks_type_is_a_field_name() -> None:
    """Drift: a field the SDKs add is shown as `<N>` until it is added to field_names.py."""
    openai_types = pytest.importorskip("openai.types")
    anthropic_types = pytest.importorskip("anthropic.types")
    from openai.types.audio import TranscriptionStreamEvent
    from openai.types.beta import AssistantStreamEvent
    from openai.types.chat import ChatCompletionChunk
    from openai.types.responses import ResponseStreamEvent

    roots = [
        ChatCompletionChunk,
        openai_types.Completion,
        ResponseStreamEvent,
        TranscriptionStreamEvent,
        openai_types.ImageGenStreamEvent,
        openai_types.ImageEditStreamEvent,
        AssistantStreamEvent,
        anthropic_types.RawMessageStreamEvent,
    ]
    missing = sorted(_model_fields(roots) - FIELD_NAMES)
    assert missing == [], f"add these to sse_audit_proxy/core/field_names.py: {missing}"

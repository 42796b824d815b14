"""A client's model name reaches the record, the metrics' `model` label and the pages: a key
pasted into `model` (`sk-proj-…`) is not shown there, real model names are, as sent."""

from __future__ import annotations

import orjson
import pytest

from sse_audit_proxy.core.credentials import holds_key
from sse_audit_proxy.core.form_scan import FormScanner
from sse_audit_proxy.core.request_info import (
    REDACTED_MODEL,
    TRACE_HEADERS,
    BodyScanner,
    RequestInfo,
    model_name,
    read_whole,
    trace_id_from,
)
from sse_audit_proxy.sinks.redaction import Redactor

KEYS = [
    "sk-proj-Q7xZk2Lm9Np4Rs8Tv1Wx3Yz5Ab7Cd9Ef",
    "sk-ant-api03-AbCdEfGh1234567890",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "Bearer sk-proj-Q7xZk2Lm9Np4Rs8Tv1Wx3Yz5",  # a whole Authorization value: the space goes
    "gpt-4o_sk-proj-Q7xZk2Lm9Np4Rs8Tv1Wx3Yz5",  # glued to a word
    "Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0",  # a token of no known shape, after its scheme
    # Other providers a gateway fronts (outside review: in log lines and 127 metric series).
    "gsk_8aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdefGHIJKL",  # Groq
    "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",  # Hugging Face
    "xai-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrSt",  # xAI
    "r8_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789a",  # Replicate
    "pplx-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",  # Perplexity
    "req1sk-proj-Q7xZk2Lm9Np4Rs8Tv1Wx3Yz5",  # a project key glued to a word
    # More shapes (an outside review: each reached the trace ID, the `model` label and evidence).
    "sk_live_51HcANARYabcdefGHIJKL0123",  # Stripe
    "rk_live_51HcANARYabcdefGHIJKL0123",
    "glpat-CANARYgitlab012345678",  # GitLab
    "csk-abcdefghijklmnopqrstuvwxyz0123456789abcdefgh",  # Cerebras
    "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "SG.AbCdEfGhIjKlMnOpQr.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg",  # SendGrid
    "dapi0123456789abcdef0123456789abcdef",  # Databricks
    "xapp-1-A0123456789-0123456789012-abcdef0123456789",  # Slack app
    "xoxe-1-AbCdEfGhIjKl0123456789",
    "lsv2_pt_0123456789abcdef0123456789abcdef_0123456789",  # LangSmith
    "pcsk_2AbCdE_AbCdEfGhIjKlMnOpQrStUvWxYz0123",  # Pinecone
    "ABSKQmVkcm9ja0FQSUtleS1hYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk=",  # Bedrock
    "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbg",
    "tgp_v1_AbCdEfGhIjKlMnOpQrStUvWx",  # Together
    "sk_0123456789abcdef0123456789abcdef0123456789abcdef",  # ElevenLabs
    "tvly-dev-AbCdEfGhIjKlMnOpQrStUvWxYz",  # Tavily
    "GOCSPX-AbCdEfGhIjKlMnOpQrStUvWxYz01",  # a Google OAuth client secret
]
MODELS = [
    "gpt-4o-2024-08-06",
    "claude-3-5-sonnet-20241022",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-72B-Instruct-AWQ",
    "ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:9a8b7c6d",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
    "gemini-1.5-pro-002",
    "task-skill-v2",  # `sk` inside a word is no key
    "my_task-skill-v2",
    "bearer-of-news-7b",
    "xai-grok-2-vision-latest",  # a provider's prefix, then a model's words
    "hf_model",
    "r8_flux-schnell",
    "task-admin-assistant-v2",  # a key's second word after a word ending in `sk`
    "ft:gpt-4o-mini-2024-07-18:acme:task-admin-assistant:9xYz1234",
    "risk-ant-colony-optimizer",
    "whisk-proj-embeddings-large",
]


def readings(model: str) -> list[RequestInfo]:
    body = orjson.dumps({"model": model, "stream": True, "messages": []})
    whole = read_whole(body)
    assert whole is not None
    scanner = BodyScanner()
    for i in range(0, len(body), 7):  # the scan, in pieces
        scanner.feed(body[i : i + 7])
    form = FormScanner(b"b")
    form.feed(b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n%s\r\n--b--\r\n' % model.encode())
    return [whole, scanner.info(), form.info()]


@pytest.mark.parametrize("key", KEYS)
def test_a_key_sent_as_the_model_is_not_shown(key: str) -> None:
    for info in readings(key):
        assert info.model == REDACTED_MODEL, info
        assert key not in info.shape and key.split()[-1] not in info.model


@pytest.mark.parametrize("model", MODELS)
def test_real_model_names_are_shown_as_sent(model: str) -> None:
    assert [info.model for info in readings(model)] == [model] * 3


def test_words_after_bearer_or_basic_are_no_key() -> None:
    assert model_name("basic model") == "basicmodel"  # shown as safe characters, not redacted
    assert model_name("Bearer abcdefgh") == REDACTED_MODEL


@pytest.mark.parametrize("key", KEYS)
def test_a_key_sent_as_the_trace_id_is_not_taken_as_one(key: str) -> None:
    # The trace ID is on every page, log line and evidence file: a key there is not an ID.
    made = "generated-id"
    for name in TRACE_HEADERS:
        assert trace_id_from({name: key}, lambda: made) == (made, None)
    assert trace_id_from({TRACE_HEADERS[0]: key, TRACE_HEADERS[1]: "req-42"}, lambda: made) == (
        "req-42",
        TRACE_HEADERS[1],
    )
    assert trace_id_from({TRACE_HEADERS[0]: "req_2024-task-skill"}, lambda: made) == (
        "req_2024-task-skill",
        TRACE_HEADERS[0],
    )


@pytest.mark.parametrize(
    "text",
    ["req_sk-proj-0123456789abcdefghij", "key_AIzaSyA0123456789abcdefghijkl", "id_AKIAABCDEFGHIJKLMNOP_x"],
)
def test_keys_glued_by_an_underscore_are_keys_to_the_redactor_too(text: str) -> None:
    assert holds_key(text)
    assert "[redacted]" in Redactor().header("X-Request-Id", text)
    assert text not in Redactor().scrub(f"upstream said {text}")


@pytest.mark.parametrize("key", [k for k in KEYS if not k.startswith("Bearer ")])
def test_log_lines_scrub_every_key_shape_in_free_text(key: str) -> None:
    """Not OpenAI's `sk-` alone: `proxy_started` logged an upstream URL with a Google key in its
    path whole (an outside review)."""
    redactor = Redactor()
    event = {"event": "proxy_started", "upstream": f"https://gw.example/k/{key}/v1"}
    line = orjson.dumps(redactor(None, "info", dict(event)))
    assert redactor.suspect_line(orjson.dumps(event))
    assert key.encode() not in line and b"[redacted]" in line

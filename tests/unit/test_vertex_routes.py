"""Partner models on Vertex AI stream their provider's own shape at `…/publishers/{publisher}/
models/{model}:streamRawPredict`, the model named in the URL: Claude's Messages events,
Mistral's and AI21's Chat chunks. On route `other` a stream cut before its end was `complete`
(an outside survey: LiteLLM's default URLs for Mistral, Codestral and Jamba on Vertex)."""

from __future__ import annotations

import pytest

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.request_info import RequestInfo, with_target

BASE = "/v1/projects/p1/locations/us-central1/publishers"


@pytest.mark.parametrize(
    ("path", "route", "model"),
    [
        (
            f"{BASE}/anthropic/models/claude-sonnet-4@20250514:streamRawPredict",
            "messages",
            "claude-sonnet-4@20250514",
        ),
        (
            f"{BASE}/mistralai/models/mistral-large-2411:streamRawPredict",
            "chat_completions",
            "mistral-large-2411",
        ),
        (f"{BASE}/mistralai/models/codestral-2501:rawPredict", "chat_completions", "codestral-2501"),
        (
            f"{BASE}/ai21/models/jamba-1.5-large@001:streamRawPredict?x=1",
            "chat_completions",
            "jamba-1.5-large@001",
        ),
    ],
)
def test_a_partner_models_path_is_its_providers_route_with_the_model_from_the_url(
    path: str, route: str, model: str
) -> None:
    assert route_for_path(path) == route
    said = dialect_for_route(route).target_info(path)
    assert said == (model, False)
    assert with_target(RequestInfo(stream=True), said) == RequestInfo(model=model, stream=True)
    assert with_target(RequestInfo(model="in-body"), said).model == "in-body"


def test_other_publishers_and_plain_paths_say_nothing_of_the_model() -> None:
    assert route_for_path(f"{BASE}/meta/models/llama-4:streamRawPredict") == "other"
    assert dialect_for_route("chat_completions").target_info("/v1/chat/completions") is None
    assert dialect_for_route("completions").target_info(f"{BASE}/mistralai/models/m:rawPredict") is None


def test_a_mistral_stream_on_vertex_cut_before_done_is_truncated() -> None:
    path = f"{BASE}/mistralai/models/mistral-large-2411:streamRawPredict"
    audit = StreamAudit(dialect_for_route(route_for_path(path))(), 0.0)
    audit.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Bonjour"}}]}\n\n', 0.1)
    r = audit.finish(0.2, End.UPSTREAM_EOF)
    assert (r.outcome, set(r.anomalies)) == (Outcome.TRUNCATED, {"missing_done", "missing_finish_reason"})

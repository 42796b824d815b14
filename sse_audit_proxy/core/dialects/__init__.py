"""Dialect registry: a new stream shape is one module plus one line in DIALECTS."""

from __future__ import annotations

from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.assistants import Assistants
from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    KEEPALIVE,
    MALFORMED,
    SHAPE,
    TERMINAL,
    USAGE,
    Dialect,
    DialectSummary,
)
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.dialects.cohere import CohereChat
from sse_audit_proxy.core.dialects.cohere_v1 import CohereV1Chat
from sse_audit_proxy.core.dialects.completions import Completions
from sse_audit_proxy.core.dialects.gemini import Gemini
from sse_audit_proxy.core.dialects.generic import Generic
from sse_audit_proxy.core.dialects.images import Images
from sse_audit_proxy.core.dialects.ollama import Ollama
from sse_audit_proxy.core.dialects.responses import Responses
from sse_audit_proxy.core.dialects.speech import Speech
from sse_audit_proxy.core.dialects.tgi import TextGenerationInference
from sse_audit_proxy.core.dialects.transcriptions import Transcriptions
from sse_audit_proxy.core.dialects.watsonx import WatsonxChat
from sse_audit_proxy.core.dialects.workers_ai import WorkersAI

# Order matters where suffixes overlap: `/chat/completions` before `/completions`.
DIALECTS: tuple[type[Dialect], ...] = (
    ChatCompletions,
    Completions,
    Responses,
    AnthropicMessages,
    Assistants,
    Speech,
    Transcriptions,
    Images,
    Ollama,
    CohereChat,
    CohereV1Chat,
    Gemini,
    TextGenerationInference,
    WorkersAI,
    WatsonxChat,
)

_BY_ROUTE: dict[str, type[Dialect]] = {d.route: d for d in DIALECTS}
ROUTES: tuple[str, ...] = (*_BY_ROUTE, Generic.route)


def route_for_path(path: str) -> str:
    """The route family of a request path, e.g. `/v1/chat/completions` -> `chat_completions`
    (a query after it is cut: evidence keeps Gemini's `?alt=sse`)."""
    path = path.partition("?")[0].rstrip("/")
    for dialect in DIALECTS:
        for suffix in dialect.path_suffixes:
            if path.endswith(suffix):
                return dialect.route
    collection = path.rpartition("/")[0]
    for dialect in DIALECTS:
        for suffix in dialect.member_of:
            if collection.endswith(suffix):
                return dialect.route
    for dialect in DIALECTS:
        if dialect.path_pattern is not None and dialect.path_pattern.search(path):
            return dialect.route
    return Generic.route


def dialect_for_route(route: str) -> type[Dialect]:
    return _BY_ROUTE.get(route, Generic)


__all__ = [
    "CONTENT",
    "DIALECTS",
    "ERROR",
    "FINISH",
    "KEEPALIVE",
    "MALFORMED",
    "ROUTES",
    "SHAPE",
    "TERMINAL",
    "USAGE",
    "Dialect",
    "DialectSummary",
    "Generic",
    "dialect_for_route",
    "route_for_path",
]

"""Which dialect the probe's StreamAudit uses: the proxy's own for the route when it has one.

The proxy has no Responses dialect yet (it audits `/v1/responses` as a generic event stream,
where every frame counts as content, so `response.created` would pass for the first token).
Until it has one, the probe audits Responses streams with the small dialect below, which
counts only output deltas as content. Once the registry knows the route, its dialect wins.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..dialects import CONTENT, TERMINAL, Dialect, DialectSummary, dialect_for_route, route_for_path
from ..dialects.base import DONE_SENTINEL, clean_usage, token_counts
from ..dialects.generic import Generic
from ..sse import Event
from .facts import as_dict
from .responses import ARGS_DELTA, OTHER_CONTENT, TERMINALS, TEXT_DELTA, finish_of

_CONTENT = frozenset({TEXT_DELTA, ARGS_DELTA, *OTHER_CONTENT})


class ResponsesFallback(Dialect):
    route = "responses"
    path_suffixes = ("/responses",)
    expects_done = False  # OpenAI sends none
    expects_finish_reason = False  # the terminal event is the finish: without it, `truncated`

    __slots__ = ("_done", "_errors", "_finish", "_malformed", "_terminal", "_usage")

    def __init__(self) -> None:
        self._done = False
        self._terminal = False
        self._finish: str | None = None
        self._usage: Any = None
        self._errors = 0
        self._malformed = 0

    def observe(self, event: Event) -> int:
        if event.data == DONE_SENTINEL:
            self._done = True
            return 0
        try:
            doc = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self._malformed += 1
            return 0
        kind = doc.get("type") or event.event
        if kind in _CONTENT:
            return CONTENT if doc.get("delta") else 0
        if kind in TERMINALS:
            response = as_dict(doc.get("response"))
            self._usage = response.get("usage") or self._usage
            self._finish = finish_of(response, kind)
            self._errors += self._finish == "failed"
            self._terminal = True
            return TERMINAL
        if kind == "error":
            self._errors += 1
            self._finish = "failed"
            self._terminal = True
            return TERMINAL
        return 0

    def summary(self) -> DialectSummary:
        usage = clean_usage(self._usage)
        prompt, completion = token_counts(usage)
        return DialectSummary(
            terminal=self._terminal, done=self._done,
            finish_reasons=[self._finish] if self._finish else [],
            missing_finish_reason=self._finish is None, usage=usage, prompt_tokens=prompt,
            completion_tokens=completion, error_events=self._errors,
            malformed_frames=self._malformed,
        )


def dialect_for(path: str) -> type[Dialect]:
    dialect = dialect_for_route(route_for_path(path))
    if dialect is Generic and path.rstrip("/").endswith(ResponsesFallback.path_suffixes):
        return ResponsesFallback
    return dialect

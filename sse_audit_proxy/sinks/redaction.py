"""Keeping credentials out of every log line, including rendered exceptions.

The proxy never puts a header value into a log event on purpose; this is the second line
of defence for text it does not control (exception messages from libraries, which can quote
a request line or a header). A structlog processor, run last before rendering.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
)
REDACTED = "[redacted]"
# Credentials that look like credentials wherever they appear in free text.
_TOKENS = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;\\]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),
)


def secret_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The built-in secret header names plus `extra`, lower-cased."""
    names = {n.strip().lower() for n in (*SECRET_HEADERS, *extra)}
    return frozenset(n for n in names if n)


class Redactor:
    """structlog processor: blanks secret-named fields and secrets inside any string."""

    def __init__(self, extra_headers: Iterable[str] = ()) -> None:
        names = secret_names(extra_headers)
        self._names = names
        # Field names as they would appear as log keys too: api-key, api_key.
        self._keys = frozenset({*names, *(n.replace("-", "_") for n in names)})
        alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        # `Name: value` / `name=value` / `'name': 'value'` as quoted in messages and reprs.
        self._line = re.compile(rf"(?i)\b({alternation})(['\"]?\s*[:=]\s*['\"]?)[^\r\n'\"]*")
        # Each pattern above needs one of these words; one search for any of them spares the
        # three substitutions on the many strings (every field of every line) that have none.
        self._suspect = re.compile(rf"(?i)bearer|basic|sk-|{alternation}").search

    def is_secret_name(self, header: str) -> bool:
        """A header whose value is never shown (built-in names and --secret-headers)."""
        return header.lower() in self._names

    def scrub(self, text: str) -> str:
        if self._suspect(text) is None:
            # A plain str either way, as a substitution returns (a StrEnum renders as its value).
            return text if type(text) is str else str.__str__(text)
        text = self._line.sub(rf"\1\2{REDACTED}", text)
        for pattern, replacement in _TOKENS:
            text = pattern.sub(replacement, text)
        return text

    def _clean(self, value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN:  # numbers and None: most fields, and nothing to scrub
            return value
        if kind is str or isinstance(value, str):
            return self.scrub(value)
        if kind is dict or isinstance(value, Mapping):  # dict first: the ABC check is slow
            return {k: REDACTED if str(k).lower() in self._keys else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        keys = self._keys
        for key, value in event.items():
            if key.lower() in keys:
                event[key] = REDACTED
            elif type(value) not in _PLAIN:
                event[key] = self._clean(value)
        return event


_PLAIN = frozenset({int, float, bool, type(None)})

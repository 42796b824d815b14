"""Assembly of streamed tool-call arguments, validated as JSON at the end of the stream."""

from __future__ import annotations

from collections.abc import Hashable

import orjson

from sse_audit_proxy.core.dialects.base import MAX_KEYS

# Tool arguments are model output; cap what one stream may make us hold.
MAX_TOOL_ARG_BYTES = 4 << 20


class ToolArgs:
    __slots__ = ("_calls", "_defaults", "_mismatched", "_overflow", "_size", "dropped")

    def __init__(self) -> None:
        self._calls: dict[Hashable, list[str]] = {}
        self._defaults: dict[Hashable, str] = {}
        self._mismatched: set[Hashable] = set()
        self._size = 0
        self._overflow = False  # past the cap we stop holding fragments and stop judging
        self.dropped = 0  # pieces of calls past MAX_KEYS calls: counted (as malformed), not held

    def _parts(self, key: Hashable) -> list[str] | None:
        """The call's fragments, a new call's made if there is room for one (else None)."""
        parts = self._calls.get(key)
        if parts is None:
            if len(self._calls) >= MAX_KEYS:
                self.dropped += 1
                return None
            parts = self._calls[key] = []
        return parts

    def open(self, key: Hashable, default: str = "") -> None:
        """A call starts. `default` is its arguments if no fragment ever comes (Anthropic's
        `content_block_start.input`, `{}` for a tool without parameters)."""
        if self._parts(key) is not None and default:
            self._defaults[key] = default

    def append(self, key: Hashable, fragment: str) -> None:
        parts = self._parts(key)
        if parts is None or self._overflow or not fragment:
            return
        self._size += len(fragment)
        if self._size > MAX_TOOL_ARG_BYTES:
            self._overflow = True
            self._calls = {k: [] for k in self._calls}
            return
        parts.append(fragment)

    def set(self, key: Hashable, arguments: str) -> None:
        """A complete arguments string (e.g. a `.done` event) replaces the fragments."""
        if self._parts(key) is None:
            return
        self._calls[key] = []
        self.append(key, arguments)

    def complete(self, key: Hashable, arguments: str) -> None:
        """The full arguments a `.done` event repeats: taken when no fragment came, and
        otherwise checked against the fragments (a client may have used either)."""
        parts = self._calls.get(key)
        if not parts:
            self.set(key, arguments)
        elif not self._overflow and "".join(parts) != arguments:
            self._mismatched.add(key)

    @property
    def count(self) -> int:
        return len(self._calls)

    def invalid(self) -> int:
        """How many calls did not assemble into a JSON object (what a function takes)."""
        if self._overflow:
            return 0
        bad = 0
        for key, parts in self._calls.items():
            if key in self._mismatched:
                bad += 1
                continue
            try:
                value = orjson.loads("".join(parts) or self._defaults.get(key, ""))
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(value, dict):
                bad += 1
        return bad

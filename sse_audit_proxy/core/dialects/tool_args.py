"""Assembly of streamed tool-call arguments, validated as JSON at the end of the stream."""

from __future__ import annotations

from collections.abc import Callable, Container, Hashable, Iterable

import orjson
from jiter import from_json

from sse_audit_proxy.core.dialects.base import MAX_KEYS

# Tool arguments are model output; cap what one stream may make us hold (bytes of UTF-8).
MAX_TOOL_ARG_BYTES = 4 << 20
# Finish reasons that say the upstream cut the output short on purpose (a token limit, a content
# filter): the call being written then ends where the cut fell, and every SDK hands the finish
# reason to the caller with it (OpenAI's `length` with `max_tokens` on a tool call, Anthropic's
# `max_tokens`, Responses' `max_output_tokens`).
# Anthropic's `refusal` too: a tool call it stops is left as far as it got (the SDK hands over
# `input={}` with the reason), as LiteLLM's Chat bridge says of it with `content_filter`.
CUT_REASONS = frozenset(
    {
        "length",
        "max_tokens",
        "max_output_tokens",
        "model_context_window_exceeded",
        "content_filter",
        "refusal",
    }
)


# The events that repeat a call's whole arguments, at most, that it is checked against.
DONE_CHECKS = 2


def _utf8(text: str) -> bytes:
    try:
        return text.encode()  # a third of the time of naming an error handler (it is rarely used)
    except UnicodeEncodeError:
        # A lone surrogate (no JSON decoder hands one out, but a str can hold one) becomes bytes
        # that orjson refuses, as it refuses the str; equal strs stay equal.
        return text.encode("utf-8", "surrogatepass")


def _same_value(a: bytes | bytearray, b: bytes) -> bool:
    """Both are JSON, of one value."""
    try:
        return bool(orjson.loads(a) == orjson.loads(b))
    except orjson.JSONDecodeError:
        return False


class ToolArgs:
    """Each call's arguments as one UTF-8 bytearray, appended to as fragments arrive.

    Not a list of the fragments: streamed arguments come a few characters at a time, and a
    str object each made the audit hold about 60 bytes a character for one-character pieces
    (15 for four-character ones); a bytearray holds about one.
    """

    __slots__ = ("_calls", "_checked", "_defaults", "_free", "_mismatched", "_overflow", "_size", "dropped")

    def __init__(self) -> None:
        self._calls: dict[Hashable, bytearray] = {}
        self._defaults: dict[Hashable, str] = {}
        self._mismatched: set[Hashable] = set()
        # How many `.done`s each call's fragments were checked against (made with the first).
        self._checked: dict[Hashable, int] | None = None
        # Calls whose input is free text: counted, not judged. Made with the first (an empty
        # set is 216 bytes, and every open stream has a ToolArgs).
        self._free: set[Hashable] | None = None
        self._size = 0
        self._overflow = False  # past the cap we stop holding fragments and stop judging
        self.dropped = 0  # pieces of calls past MAX_KEYS calls: counted (as malformed), not held

    def _buffer(self, key: Hashable) -> bytearray | None:
        """The call's arguments so far, a new call's made if there is room for one (else None)."""
        buf = self._calls.get(key)
        if buf is None:
            if len(self._calls) >= MAX_KEYS:
                self.dropped += 1
                return None
            buf = self._calls[key] = bytearray()
        return buf

    def open_free(self, key: Hashable) -> None:
        """A call whose input is free text (a Responses custom tool's): counted, not judged."""
        free = self._free
        if free is None:
            free = self._free = set()
        if key not in free:
            if len(self._calls) + len(free) >= MAX_KEYS:
                self.dropped += 1
                return
            free.add(key)

    def open(self, key: Hashable, default: str = "") -> None:
        """A call starts. `default` stands for its arguments if no fragment ever comes
        (Anthropic's `content_block_start.input`: `{}` for an object, `null` for anything else,
        never the input's text)."""
        if self._buffer(key) is not None and default:
            self._defaults[key] = default

    def append(self, key: Hashable, fragment: str) -> None:
        buf = self._buffer(key)
        if buf is None or self._overflow or not fragment:
            return
        try:
            data = fragment.encode()  # _utf8, in place: this runs for every fragment
        except UnicodeEncodeError:
            data = _utf8(fragment)
        self._size += len(data)
        if self._size > MAX_TOOL_ARG_BYTES:  # what was held goes; the calls are not judged
            self._overflow = True
            self._calls = {k: bytearray() for k in self._calls}
            return
        buf += data

    def not_text(self, key: Hashable) -> None:
        """A fragment that is not a string (an object, where OpenAI sends the object's JSON
        text): no client can concatenate it, so the call is invalid, not empty."""
        if self._buffer(key) is not None:
            self._mismatched.add(key)

    def set(self, key: Hashable, arguments: str) -> None:
        """A complete arguments string (e.g. a `.done` event) replaces the fragments."""
        buf = self._buffer(key)
        if buf is None:
            return
        self._size -= len(buf)
        buf.clear()
        self.append(key, arguments)

    def complete(self, key: Hashable, arguments: str) -> None:
        """The full arguments a `.done` event repeats: taken when no fragment came, and
        otherwise checked against the fragments (a client may have used either). The same
        value written otherwise (a gateway that serialises the final call again: LiteLLM's
        Responses bridge, `{"a": 1}` for `{"a":1}`) is the same arguments.

        A call is checked against DONE_CHECKS of them: the protocol repeats its arguments in two
        events (Responses' `function_call_arguments.done` and `output_item.done`), and an
        upstream repeating a tiny `.done` had the held arguments (up to 4 MiB) parsed for each
        (110 ms a frame, every stream on the loop stalled: an outside review)."""
        buf = self._calls.get(key)
        if not buf:
            self.set(key, arguments)
            return
        checked = self._checked
        if checked is None:
            checked = self._checked = {}
        seen = checked.get(key, 0)
        if seen >= DONE_CHECKS or key in self._mismatched:
            return
        checked[key] = seen + 1
        if not self._overflow and (done := _utf8(arguments)) != buf and not _same_value(buf, done):
            self._mismatched.add(key)

    @property
    def last(self) -> Hashable | None:
        """The call that began last (a cut falls in it: calls are written one after another)."""
        return next(reversed(self._calls), None)

    def calls(self) -> Iterable[Hashable]:
        return self._calls.keys()

    @property
    def count(self) -> int:
        return len(self._calls) + (len(self._free) if self._free else 0)

    def empty(self, spared: Container[Hashable] = ()) -> int:
        """How many calls got no argument text at all, where a parameterless call's is `{}` on
        OpenAI (LiteLLM's bridge from Anthropic sends `""`: `json.loads` fails on it).
        `spared`: calls a finish reason in CUT_REASONS cut short, not judged."""
        if self._overflow:
            return 0
        return sum(
            1
            for key, buf in self._calls.items()
            if not buf and not self._defaults.get(key) and key not in self._mismatched and key not in spared
        )

    def broken(self, spared: Container[Hashable] = (), ended: Container[Hashable] = ()) -> int:
        """How many calls were broken before the stream's end, for a stream judged before it
        (the client left, a timeout, a cut): arguments that no JSON object can go on from (what
        the anthropic Python SDK raises at, parsing each call's text as it grows with jiter's
        partial mode, and then leaves: such a stream was judged on nothing, an outside
        review), or that a `.done` contradicted, or a fragment that is not text; and the calls
        in `ended`, whose finish reason came (a Chat choice's, another choice cut), that are not
        an object. Any other call whose text could still become an object is not judged: a
        token limit or a cut may have ended it, its finish reason not yet come (a `.done` or a
        block's stop comes before a limit's reason too)."""

        def bad(key: Hashable, buf: bytearray) -> bool:
            if key in ended:
                return not _an_object(buf or self._defaults.get(key, ""))
            return _broken_so_far(buf)

        return self._count(spared, bad)

    def invalid(self, spared: Container[Hashable] = ()) -> int:
        """How many calls did not assemble into a JSON object (what a function takes), those
        in `spared` aside (see empty)."""
        return self._count(spared, lambda key, buf: not _an_object(buf or self._defaults.get(key, "")))

    def _count(self, spared: Container[Hashable], bad: Callable[[Hashable, bytearray], bool]) -> int:
        """Calls not in `spared` that a `.done` contradicted, or that `bad` finds bad."""
        if self._overflow:
            return 0
        return sum(
            1
            for key, buf in self._calls.items()
            if key not in spared and (key in self._mismatched or bad(key, buf))
        )


def _an_object(text: bytes | bytearray | str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


def _broken_so_far(buf: bytearray) -> bool:
    """No JSON object can go on from these arguments: jiter's partial mode refuses them (so
    the anthropic SDK raises), or they begin something else (`[`, `1`). Blank: not yet."""
    if not buf.strip():
        return False
    try:
        return not isinstance(from_json(bytes(buf), partial_mode=True), dict)
    except ValueError:
        return True

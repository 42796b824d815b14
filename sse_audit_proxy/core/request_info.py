"""What the audit needs to know about a request, read without changing it."""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import ijson
import msgspec
import orjson

from sse_audit_proxy.core.credentials import holds_key, shows_credential
from sse_audit_proxy.core.field_names import FIELD_NAMES, REQUEST_FIELDS
from sse_audit_proxy.core.skeleton import numbered

MAX_TRACE_ID = 128
MAX_MODEL = 128
UNKNOWN_MODEL = "unknown"
REDACTED_MODEL = "[redacted]"  # as the log lines' redaction writes a key
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]")
# The header the proxy echoes to the client and sends upstream (the one OpenAI's SDKs send).
TRACE_HEADER = "X-Client-Request-Id"
TRACE_HEADERS = (TRACE_HEADER, "X-Request-Id")


MAX_SHAPE_FIELDS = 32
_FIELD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(slots=True, frozen=True)
class RequestInfo:
    model: str = UNKNOWN_MODEL
    stream: bool = False
    include_usage: bool = False
    # The request's shape, for evidence (never its text): each top-level field's name with its
    # value when it is a number or a boolean (temperature, n, max_tokens, stream), else the
    # size of a list (messages, tools) or null; `stream_options` flattened the same way. As
    # one compact JSON object (it lives as long as the stream: one string is the least memory).
    shape: str = "{}"

    @classmethod
    def from_body(cls, body: bytes) -> RequestInfo:
        """Read `model`, `stream` and `stream_options.include_usage` from a JSON body."""
        body = body.removeprefix(BOM)
        if not body or body.lstrip()[:1] != b"{":
            return cls()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(doc, dict):
            return cls()
        options = doc.get("stream_options")
        if any(map(respelled, doc)) or (
            isinstance(options, dict) and any(respelled(k, OPTION_KEYS) for k in options)
        ):
            return cls()
        model = doc.get("model")
        return cls(
            model=model_name(model) if isinstance(model, str) else UNKNOWN_MODEL,
            stream=asks_for_stream(doc),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            shape=request_shape(doc),
        )


_Figure = int | float | bool | None


def _figure(value: object) -> _Figure:
    if isinstance(value, bool | int | float):
        return value
    return len(value) if isinstance(value, list) else None


def _known(key: str) -> str:
    return key if key in REQUEST_FIELDS or key in FIELD_NAMES else f"<{len(key)}>"


def _named(fields: dict[str, _Figure]) -> dict[str, _Figure]:
    """`fields` with every key that is not a request field's name written `"<N>"` (`"<N>#2"`,
    ... after the first of that length): a client's own keys can be text (a name, a key)."""
    out: dict[str, _Figure] = {}
    for key, value in fields.items():
        head, dot, rest = key.partition(".")  # stream_options' fields: `stream_options.name`
        out[numbered(_known(head) + (dot + _known(rest) if dot else ""), out)] = value
    return out


def request_shape(doc: dict[str, object]) -> str:
    out: list[tuple[str, int | float | bool | None]] = []
    for key, value in doc.items():
        if len(out) >= MAX_SHAPE_FIELDS:
            break
        if not _FIELD.fullmatch(key):
            continue
        if isinstance(value, dict) and key == "stream_options":
            out += [(f"{key}.{k}", _figure(v)) for k, v in list(value.items())[:8] if _FIELD.fullmatch(k)]
        else:
            out.append((key, _figure(value)))
    return orjson.dumps(_named(dict(out))).decode()


class _Shape:
    """The request's shape, learned from the scanner's parse events (see request_shape)."""

    __slots__ = ("depth", "fields", "lists", "options", "respelled", "top")

    def __init__(self) -> None:
        self.fields: dict[str, int | float | bool | None] = {}
        self.lists: set[str] = set()  # top-level fields that are arrays: their items counted
        # The top-level key being read: parse-event prefixes join keys with dots, so a key
        # spelled "stream_options.include_usage" has the nested field's prefix.
        self.top = ""
        # Objects open at prefix "": the body, and objects under an empty key (a key longer
        # than STRING_KEEP is scanned as ""), whose keys are at prefix "" too but not top-level.
        self.depth = 0
        self.options = False  # a top-level stream_options was seen
        self.respelled = False  # a key read spelled otherwise (see respelled)

    def take(self, events: Iterable[tuple[str, str, object]], found: dict[str, object]) -> None:
        """A batch of parse events: the wanted values into `found`, the shape into self.

        One loop, no call per event: a body's events are mostly inside its `messages`, two
        dots deep or more, where neither the wanted values nor the shape look (profiled)."""
        fields = self.fields
        for prefix, event, value in events:
            if not prefix:
                if event == "map_key":
                    if self.depth == 1 and isinstance(value, str):
                        self._top_key(value, found)
                elif event == "start_map":
                    self.depth += 1
                elif event == "end_map":
                    self.depth -= 1
                continue
            dot = prefix.find(".")
            if dot >= 0 and prefix.find(".", dot + 1) >= 0:
                continue  # deeper than a top-level field's items and stream_options' fields
            # (found by two searches that stop at the first dots: a deep path can be long)
            name, _, rest = prefix.partition(".")
            if prefix in _WANTED and name == self.top:
                found[prefix] = value
            if name != self.top or name not in fields:
                continue  # (a top-level key spelled with a dot is not the field before its dot)
            if prefix == name:  # the value itself ("a." is a key "" inside it)
                if event == "map_key" and name == "stream_options" and respelled(value, OPTION_KEYS):  # type: ignore[arg-type]
                    self.respelled = True
                elif event == "start_array":
                    self.lists.add(name)
                    fields[name] = 0
                elif event in ("number", "boolean"):
                    fields[name] = _scalar(value)
            elif rest == "item" and name in self.lists and event in _ITEM_STARTS:
                fields[name] = int(fields[name] or 0) + 1
            elif (
                name == "stream_options"
                and event in ("number", "boolean")
                and len(fields) < MAX_SHAPE_FIELDS
                and _FIELD.fullmatch(rest)
            ):
                fields[f"{name}.{rest}"] = _scalar(value)

    def _top_key(self, key: str, found: dict[str, object]) -> None:
        self.top = key
        if respelled(key):
            self.respelled = True
        fields = self.fields
        if key == "stream_options":
            if self.options:  # given twice: the last one counts
                found.pop(_INCLUDE_USAGE, None)
                for name in [k for k in fields if k.startswith("stream_options.")]:
                    del fields[name]
            self.options = True
        if len(fields) < MAX_SHAPE_FIELDS and _FIELD.fullmatch(key):
            fields.setdefault(key, None)


_ITEM_STARTS = frozenset({"start_map", "start_array", "string", "number", "boolean", "null"})


def _scalar(value: object) -> int | float | bool | None:
    # An integer past 64 bits is given as a float, as orjson reads it (the shape is orjson
    # text: a bigger int made that raise, and the request fail after it was sent upstream).
    if isinstance(value, bool) or (isinstance(value, int) and _INT_MIN <= value <= _UINT_MAX):
        return value
    try:
        return float(value)  # type: ignore[arg-type]  # ijson gives Decimal for fractions
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past 1e308
        return None


_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1


# The request body is scanned as it streams past, never held. What the scan holds at most:
# - the content of one JSON string, up to STRING_KEEP bytes: a longer string (a prompt, a
#   base64 image) is handed to the JSON parser as "" (its content is never needed);
# - inside yajl (ijson's C backend), the token in progress: strings are short by then, and
#   more than QUIET_LIMIT bytes without a parse event (a giant number, whitespace) ends the scan;
# - the parse events of one slice of at most SCAN_SLICE bytes.
STRING_KEEP = 1 << 10
QUIET_LIMIT = 64 << 10
SCAN_SLICE = 16 << 10
# What a scan may cost: each parse event is a step in Python (0.6 µs; 2 µs with the step a
# short string with an escape takes in _shorten), so a body of small tokens cost more than its
# size says (30 MB of one-word messages, 8 M events: 5 s of the loop; at a million events, 4 MB
# of `"\"",` held it 1.8 s). A body with more events than this is not read further: its model is
# unknown, as for a body that is not JSON. Real prompts are a few long strings: a few thousand
# events (and a body read whole, up to 64 KiB, takes none).
MAX_SCAN_EVENTS = 250_000
# Each parse event comes with its path, which grows with the nesting: 30 KB of `[` (30,000
# deep) held the loop for a second and took 2 GB. A body nested deeper than this is not read
# further (unknown). msgspec, which reads whole bodies (read_whole), stops near Python's
# recursion limit (1,000) and leaves deeper bodies to the scan: they agree up to here.
MAX_DEPTH = 1024
# ... and so do the keys it passes through: a key is kept whole up to STRING_KEEP, and 1,000
# levels of 1,000-character keys (1 MB, under both limits) took 500 MB of paths and held the
# loop for 0.7 s, 6.8 s with array items at the bottom. Below the top-level values' own values
# (objects in `messages`, a tool's schema) nothing is read: a string there is given to the
# parser whole up to DEEP_STRING_KEEP bytes (yajl checks its UTF-8), else as "", and below
# DEEP_LEVELS always as "": a path, which yajl copies for each key, is then at most about 2 KB
# (with 16 bytes a level, 17 KB: 3 MB of keys at the bottom cost 4.7 s).
DEEP_STRING_KEEP = 16
DEEP_LEVELS = 64


def _string_cap(depth: int) -> int:
    """The longest a string at this nesting is given to the parser as it is."""
    if depth <= 2:  # the top-level values and their own: what the scan reads
        return STRING_KEEP
    return DEEP_STRING_KEEP if depth <= DEEP_LEVELS else 0


_BRACKETS = re.compile(rb"[\[\]{}]")
# A JSON string's content from where a read resumes it: stops at its closing quote, the read's
# end, or a backslash that ends the read (its escaped byte comes in the next).
# Possessive: the plain `*` took 13 s on 64 MB of `\"` (its backtracking state), this 0.4 s.
_STRING_BODY = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.DOTALL)
# yajl's C backend for ijson (3.6) crashes the process (a segmentation fault) on an integer
# longer than Python's int-from-text limit (4300 digits by default, at least 640 whatever
# PYTHONINTMAXSTRDIGITS says): a body with a run of this many digits outside a long string
# ends the scan before the parser sees it. Such a body is unknown, as one the scan cannot
# read; a Python upstream refuses it too (json.loads raises past the limit).
MAX_NUMBER_DIGITS = 600
_LONG_NUMBER = re.compile(rb"(?<![0-9])[0-9]{%d}" % MAX_NUMBER_DIGITS)  # from a run's start: linear
_DIGITS = b"0123456789"
_INCLUDE_USAGE = "stream_options.include_usage"
# Python's json (FastAPI, vLLM, LiteLLM) and body-parser read a body that begins with UTF-8's
# byte order mark (PowerShell's `Out-File -Encoding utf8` writes one); orjson and msgspec do not.
BOM = b"\xef\xbb\xbf"
# OpenAI's speech asks for an event stream with `stream_format: "sse"`, not `stream`.
_STREAM_FORMAT = "stream_format"
_WANTED = frozenset({"model", "stream", _STREAM_FORMAT, _INCLUDE_USAGE})
# Go's encoding/json (Ollama, gin-based gateways) gives a key to a field whatever its case (its
# simple folding: `\u017f` is `s`, the Kelvin sign `k`): `"Stream": true` streams there and is
# no field to Python, and with `"model"` and `"MODEL"` both, Go takes the last. A body that
# spells a key the audit reads any other way is unknown, as one that is not JSON: judged on
# it, `missing_usage` and the model were one reader's guess (a client made a healthy Go canary
# look bad with them). Keys are looked for where they are read: at the top, and in
# stream_options.
TOP_KEYS = frozenset({"model", "stream", _STREAM_FORMAT, "stream_options"})
OPTION_KEYS = frozenset({"include_usage"})


def respelled(key: str, keys: frozenset[str] = TOP_KEYS) -> bool:
    """`key` is one of `keys` spelled in another case, as Go's encoding/json folds it."""
    # str.lower() folds one character to one for these letters, as Go does; casefold() would
    # also take `\ufb06` for `st`, which Go does not.
    return key not in keys and len(key) <= 14 and key.lower().replace("\u017f", "s") in keys


_BACKEND = ijson.get_backend("yajl2_c")
# yajl checks a string's UTF-8 form, then Python decodes it strictly: an encoded surrogate
# (ED A0 80), a code point past U+10FFFF or an overlong form passes the first and fails the
# second with UnicodeDecodeError, not a JSONError. Both mean "not valid JSON": the scan ends
# and the request goes on as it was sent (it once ended in a 500 with the request sent). So
# does a number whose exponent no Decimal holds (`1e99999999999999999999`, which Python's json
# reads as inf): it was logged as a fault of the proxy (`proxy_failed`).
_UNREADABLE = (ijson.JSONError, UnicodeDecodeError, decimal.DecimalException)


class BodyScanner:
    """Learns `model`, `stream`, `stream_options.include_usage` from a body fed in pieces.

    Only top-level keys count (the OpenAI SDK sends `model` after a huge `messages`), so the
    whole body is parsed incrementally; nothing but the three values is kept. A body that is
    not one valid JSON object counts as unknown, as a body that `orjson` refused did before.
    A body the proxy has whole before sending it on (up to 64 KiB: most) is given to
    feed_whole, which reads it in one go (read_whole) when it can.
    """

    __slots__ = (
        "_cap",
        "_carry_odd",
        "_coro",
        "_depth",
        "_digits",
        "_events",
        "_failed",
        "_found",
        "_in_str",
        "_left",
        "_on_error",
        "_quiet",
        "_shape",
        "_str",
        "_target",
        "_whole",
    )

    def __init__(self, on_error: Callable[[Exception], None] | None = None, target: Said = None) -> None:
        # `on_error`: told of a defect of the scan itself (never of a body that is not JSON);
        # the request goes on as it was sent either way, and its record knows less.
        self._on_error = on_error
        self._target = target  # what the request's target said (Dialect.target_info)
        self._events: Any = None  # yajl's parser and its event list: made when first fed
        self._coro: Any = None
        self._whole: RequestInfo | None = None  # read whole (feed_whole)
        self._found: dict[str, object] = {}
        self._failed = False
        self._in_str = False
        self._str: bytearray | None = bytearray()  # None: longer than STRING_KEEP
        self._carry_odd = False  # inside a string, the bytes so far end in an odd run of '\\'
        self._cap = STRING_KEEP  # the longest the current string is kept
        self._quiet = 0  # bytes given to the parser since its last event
        self._left = MAX_SCAN_EVENTS  # parse events the scan may still take
        self._digits = 0  # the digits that end the bytes given to the parser so far
        self._depth = 0  # arrays and objects open at the end of the bytes given to the parser
        self._shape = _Shape()  # for evidence: field names, numbers, list sizes; never text

    def feed_whole(self, parts: list[bytes]) -> None:
        """The whole body, in the pieces it was read in (most bodies are read whole before the
        request is sent on): read in one go when read_whole can, else fed as pieces."""
        body = (parts[0] if len(parts) == 1 else b"".join(parts)).removeprefix(BOM)
        try:
            whole = read_whole(body)
        except Exception as exc:
            self._broke(exc)
            return
        if whole is None:
            self.feed(body)
        else:
            self._whole = whole
            self.release()

    def feed(self, data: bytes) -> None:
        if self._failed:
            return
        if self._coro is None and not self._in_str and data[:3] == BOM:
            data = data[3:]  # (the body's first read: a BOM cut across reads is not looked for)
        try:
            data = self._shorten(data)
            if self._depth > MAX_DEPTH or self._long_number(data):
                self._fail()
                return
            self._parse(data)
        except _UNREADABLE:
            self._fail()
        except Exception as exc:
            self._broke(exc)

    def _shorten(self, data: bytes) -> bytes:
        """The bytes for the JSON parser: every string longer than STRING_KEEP becomes "", and
        inside the top-level values' own values (never read) every one over DEEP_STRING_KEEP."""
        if not self._in_str and 0x5C not in data:
            # No backslash and a whole number of strings: every quote opens or closes one, so
            # when none is too long the loop below would give `data` back as it is (a typical
            # request body, in one read: its cost per stream, profiled).
            parts = data.split(b'"')
            if len(parts) % 2 and max(map(len, parts[1::2]), default=0) <= STRING_KEEP:
                depth = self._depth
                if self._nests_short(parts):
                    return data
                self._depth = depth  # as it was: the loop below follows it again
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            if not self._in_str:
                q = data.find(b'"', pos)
                outside = data[pos:] if q < 0 else data[pos:q]
                self._nest(outside)
                out.append(outside)
                if q < 0:
                    break
                self._in_str, self._str, self._carry_odd = True, bytearray(), False
                self._cap = _string_cap(self._depth)
                pos = q + 1
                continue
            if self._carry_odd:  # the read before ended in a backslash: this byte is escaped
                self._keep(data[pos : pos + 1])
                self._carry_odd = False
                pos += 1
                continue
            # The string's end, found in C: a step in Python per escaped quote let a body of
            # `\"` cost 0.16 s a MB of the loop, with no parse event to count against the cap.
            end = _STRING_BODY.match(data, pos).end()  # type: ignore[union-attr]  # matches ""
            if end == n or data[end] == 0x5C:  # the read ends in the string (maybe in a `\`)
                self._keep(data[pos:])
                self._carry_odd = end < n
                break
            self._keep(data[pos:end])
            kept = self._str
            out.append(b'""' if kept is None else b'"' + bytes(kept) + b'"')
            self._in_str, self._str = False, bytearray()
            pos = end + 1
        return b"".join(out)

    def _nests_short(self, parts: list[bytes]) -> bool:
        """Follow the nesting through `parts` (outside a string, inside, ...): False at a string
        too long for its depth."""
        nest = self._nest
        for i in range(1, len(parts), 2):
            nest(parts[i - 1])
            if len(parts[i]) > _string_cap(self._depth):
                return False
        nest(parts[-1])
        return True

    def _nest(self, outside: bytes) -> None:
        """Follow the nesting through bytes outside strings; past MAX_DEPTH it stays there."""
        depth = self._depth
        opens = outside.count(b"[") + outside.count(b"{")
        if depth > MAX_DEPTH:
            return
        if depth + opens <= MAX_DEPTH:  # cannot get too deep here (most reads): C counts only
            self._depth = depth + opens - outside.count(b"]") - outside.count(b"}")
            return
        for bracket in _BRACKETS.findall(outside):
            depth += 1 if bracket in b"[{" else -1
            if depth > MAX_DEPTH:
                break
        self._depth = depth

    def _long_number(self, data: bytes) -> bool:
        """A run of MAX_NUMBER_DIGITS digits, counting the end of the bytes fed before."""
        lead = len(data) - len(data.lstrip(_DIGITS))
        if lead == len(data):
            self._digits += lead
            return self._digits >= MAX_NUMBER_DIGITS
        if self._digits + lead >= MAX_NUMBER_DIGITS or _LONG_NUMBER.search(data) is not None:
            return True
        self._digits = len(data) - len(data.rstrip(_DIGITS))
        return False

    def _keep(self, seg: bytes) -> None:
        kept = self._str
        if kept is not None:
            if len(kept) + len(seg) > self._cap:
                self._str = None
            else:
                kept += seg

    def _parse(self, data: bytes) -> None:
        if self._coro is None:
            self._events = ijson.sendable_list()
            self._coro = _BACKEND.parse_coro(self._events)
        for i in range(0, len(data), SCAN_SLICE):
            piece = data[i : i + SCAN_SLICE]
            self._coro.send(piece)
            if self._events:
                self._quiet = 0
                self._take()
                if self._failed:
                    return
            else:
                self._quiet += len(piece)
                if self._quiet > QUIET_LIMIT:
                    self._fail()  # a token the parser would have to hold without bound
                    return

    def _take(self) -> None:
        events = self._events
        self._left -= len(events)
        if self._left < 0:
            self._fail()  # too dear to read on: unknown, as a body that is not JSON
            return
        self._shape.take(events, self._found)
        del events[:]
        if self._shape.respelled:
            self._fail()  # which spelling the upstream reads is its own: unknown

    def _fail(self) -> None:
        self._failed = True
        self._found.clear()
        if self._events is not None:
            self._events.clear()
        self._str = None

    def _broke(self, exc: Exception) -> None:
        self._fail()
        if self._on_error is not None:
            self._on_error(exc)

    def release(self) -> None:
        """Drop the parser (yajl's buffers) once the body is through; feed() then ignores."""
        self._failed = True
        self._coro = self._events = None

    def info(self, complete: bool = True) -> RequestInfo:
        """What was learned; `complete`: the body ended, so it must parse as a whole."""
        return with_target(self._read(complete), self._target)

    def _read(self, complete: bool) -> RequestInfo:
        if self._whole is not None:
            return self._whole
        try:
            if complete and not self._failed:
                try:
                    if self._in_str:
                        raise ijson.IncompleteJSONError("unterminated string")
                    if self._coro is None:  # nothing was fed: an empty body
                        raise ijson.IncompleteJSONError("no body")
                    self._coro.close()
                    self._take()
                except _UNREADABLE:
                    self._fail()
            if self._failed:
                return RequestInfo()
            return _info(self._found, self._shape.fields)
        except Exception as exc:
            self._broke(exc)
            return RequestInfo()


# What a request's target says that its body does not (Dialect.target_info): the model, if it
# names one, and whether it asks for a stream.
Said = tuple[str | None, bool] | None


def with_target(info: RequestInfo, said: Said) -> RequestInfo:
    """The body's reading `info` with what the target said: the body's model first, a stream
    asked for by either."""
    if said is None:
        return info
    model, stream = said
    if model and info.model == UNKNOWN_MODEL:
        info = replace(info, model=model_name(model))
    return replace(info, stream=True) if stream and not info.stream else info


def asks_for_stream(found: Mapping[str, object]) -> bool:
    """`"stream": true`, or speech's `"stream_format": "sse"`, among a body's top-level values."""
    return found.get("stream") is True or found.get(_STREAM_FORMAT) == "sse"


def _info(found: dict[str, object], fields: dict[str, int | float | bool | None]) -> RequestInfo:
    """The record's reading of a request, from the wanted values and the shape's fields."""
    if not found:
        return RequestInfo()
    model = found.get("model")
    return RequestInfo(
        model=model_name(model) if isinstance(model, str) else UNKNOWN_MODEL,
        stream=asks_for_stream(found),
        include_usage=found.get(_INCLUDE_USAGE) is True,
        shape=orjson.dumps(_named({k: v for k, v in fields.items() if k != "stream_options"})).decode(),
    )


# Reading a whole body in one go ------------------------------------------------------------
#
# msgspec reads a body as its top-level members (each value's bytes left as they are, checked
# for JSON syntax but not read into objects) about 20 times faster than the scan's parse events
# do, and in C whatever the body's size: a 60 KB prompt took the scan 320 µs, this 17 µs.
# read_whole gives exactly what the scan would, or None (then the scan reads the body): it
# takes only bodies whose reading is plain: valid UTF-8 (msgspec does not check the strings it
# skips; yajl does), no key twice and no escape in a key in the objects it reads members of
# (the walk in _members proves both), no top-level key that is empty, dotted or longer than
# STRING_KEEP, and numbers the scan reads the same way (no exponent, at most 18 digits).
_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_FIRST = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*')
_NEXT = re.compile(rb'[ \t\n\r]*,[ \t\n\r]*"([^"\\]*)"[ \t\n\r]*:[ \t\n\r]*')
_CLOSE = re.compile(rb"[ \t\n\r]*\}[ \t\n\r]*")
_EMPTY = re.compile(rb"[ \t\n\r]*\{[ \t\n\r]*\}[ \t\n\r]*")
_PLAIN_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?")
_NOT_PLAIN = object()


def read_whole(body: bytes) -> RequestInfo | None:
    """A whole request body's reading, as BodyScanner would give it; None when not sure."""
    if len(body) > QUIET_LIMIT or not (body.isascii() or _is_utf8(body)):
        return None
    members = _members(body)
    if members is None:
        return None
    found: dict[str, object] = {}
    fields: dict[str, int | float | bool | None] = {}
    for key, raw in members:
        if not key or "." in key or len(key) > STRING_KEEP:
            return None  # the scan reads such a key's events in ways of its own
        if respelled(key):
            return RequestInfo()
        value = _value(raw, key in _WANTED)
        if value is _NOT_PLAIN:
            return None
        if key in _WANTED:
            found[key] = value
        shown = len(fields) < MAX_SHAPE_FIELDS and _FIELD.fullmatch(key) is not None
        if shown:
            fields[key] = None
        first = raw[0]
        if first == 0x7B:  # {
            if key == "stream_options" and not _options(bytes(raw), found, fields, shown):
                return None
        elif not shown:
            continue
        elif first == 0x5B:  # [
            fields[key] = len(_ITEMS.decode(raw))
        elif isinstance(value, int | float):  # booleans too (bool is an int)
            fields[key] = value
    return _info(found, fields)


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _members(data: bytes) -> list[tuple[str, memoryview]] | None:
    """A JSON object's members in order, when msgspec's reading of it is all of it."""
    try:
        obj = _OBJECT.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    items = obj.items()
    if items and len(data) == sum(len(k.encode()) + len(v) for k, v in items) + 4 * len(items) + 1:
        # As long as its members written compactly ("key":value, a comma between, the braces
        # round): a key twice, an escape in a key or a space would make it longer.
        return [(k, memoryview(v)) for k, v in items]
    out: list[tuple[str, memoryview]] = []
    pos, pattern = 0, _FIRST
    for key, raw in items:
        m = pattern.match(data, pos)
        if m is None or m[1] != key.encode() or not data.startswith(raw, m.end()):
            return None  # a key twice (msgspec keeps the last), or one with an escape
        pos, pattern = m.end() + len(raw), _NEXT
        out.append((key, memoryview(raw)))
    if not out:
        return out if _EMPTY.fullmatch(data) else None
    return out if _CLOSE.fullmatch(data, pos) else None


def _value(raw: memoryview, wanted: bool) -> object:
    """A member's value as the scan's parse events leave it: what its last event carries (a
    container's last event, its end, carries None), numbers as _scalar reads them. A string
    is read only when `wanted` (else "": only numbers and booleans reach the shape)."""
    first = raw[0]
    if first == 0x7B or first == 0x5B:  # { [
        return None
    if first == 0x22:  # "
        if not wanted or len(raw) - 2 > STRING_KEEP:
            return ""  # as the scan shortens it
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:  # a lone surrogate escape: msgspec refuses, yajl takes it
            return _NOT_PLAIN
    if first in b"tfn":
        return msgspec.json.decode(raw)
    m = _PLAIN_NUMBER.fullmatch(raw)
    if m is None:
        return _NOT_PLAIN  # an exponent, or more digits than both read the same way
    return float(bytes(raw)) if m[1] else int(bytes(raw))


def _options(
    raw: bytes, found: dict[str, object], fields: dict[str, int | float | bool | None], shown: bool
) -> bool:
    """stream_options' members: include_usage, and its numbers and booleans into the shape."""
    members = _members(raw)
    if members is None:
        return False
    for key, value_raw in members:
        if not key or len(key) > STRING_KEEP:
            return False
        if "." in key:
            continue  # the scan skips what is deeper than a field of stream_options
        if respelled(key, OPTION_KEYS):
            return False  # the scan reads it (and finds it unknown)
        value = _value(value_raw, key == "include_usage")
        if value is _NOT_PLAIN:
            return False
        if key == "include_usage":
            found[_INCLUDE_USAGE] = value
        if (
            shown
            and isinstance(value, int | float)
            and len(fields) < MAX_SHAPE_FIELDS
            and _FIELD.fullmatch(key)
        ):
            fields[f"stream_options.{key}"] = value
    return True


def model_name(value: str) -> str:
    """A client's model name as records, metric labels and pages show it: safe characters, at
    most MAX_MODEL; one that holds a key (a key pasted into `model`) is not shown (it reached
    the metrics' `model` label and `/streams/recent`). Looked for as sent, and as shown: taking
    out the space of `Bearer sk-...` glued the key to the word."""
    name = safe_token(value, MAX_MODEL)
    if not name:
        return UNKNOWN_MODEL
    return REDACTED_MODEL if holds_key(value[: MAX_MODEL * 4]) or holds_key(name) else name


def safe_token(value: str, limit: int) -> str:
    """Restrict a client-supplied string to a safe character set and length for logs/labels."""
    return _UNSAFE.sub("", value[: limit * 4])[:limit]


# W3C Trace Context: version-traceid-parentid-flags, lowercase hex (a future version may append
# fields after a dash; version 00 may not, and version ff is invalid).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?", re.ASCII)
_ZEROS = "0" * 32


def traceparent_ids(value: str | None) -> tuple[str, str] | None:
    """The trace ID and the caller's span ID of a valid `traceparent` header, else None: what
    joins a log line to the client's distributed trace. (Not the record's trace ID: every
    request of one trace shares it.)"""
    if not value or len(value) > 512:
        return None
    found = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if found is None:
        return None
    version, trace, span, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or trace == _ZEROS or span == _ZEROS[:16]:
        return None
    return trace, span


# The attempt number the openai and anthropic SDKs (Python and TypeScript, and others generated
# by Stainless) send on each try of a request: 0, then 1, 2... for their automatic retries.
RETRY_HEADER = "x-stainless-retry-count"


def client_retry(value: str | None) -> int | None:
    """The retry count a client said (`RETRY_HEADER`), if it is a small whole number."""
    if value is None:
        return None
    value = value.strip(" \t")
    if not (0 < len(value) <= 3 and value.isascii() and value.isdigit()):
        return None
    return int(value)


def trace_id_from(
    headers: Mapping[str, str], new_id: Callable[[], str], credentials: Iterable[str] = ()
) -> tuple[str, str | None]:
    """The client's trace ID (sanitised), and the field of TRACE_HEADERS it came from (None:
    the client sent none that could be used, and `new_id` made one: randomness stays with the
    caller). `credentials`: the request's own (credentials_in), which the ID must not show."""
    for name in TRACE_HEADERS:
        value = headers.get(name)
        if value:
            cleaned = safe_token(value, MAX_TRACE_ID)
            # A key sent as the ID (a client's mix-up) is not one: the ID is shown everywhere.
            # So is the request's own key, whatever its shape (Azure's are 32 hex digits, as
            # a trace ID may be).
            if cleaned and not (
                holds_key(value[: MAX_TRACE_ID * 4])
                or holds_key(cleaned)
                or shows_credential(value, credentials)
                or shows_credential(cleaned, credentials)
            ):
                return cleaned, name
    return new_id(), None

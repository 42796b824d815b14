"""What a dialect is: an interpreter from SSE events to observations, with no I/O.

`observe()` runs once per frame on the hot path and returns a small bit set; everything
that is only needed at the end of the stream (finish reasons, usage, tool arguments,
error counts) stays in the dialect's own state and is read once through `summary()`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote

import orjson

from sse_audit_proxy.core.sse import Event

# Bits returned by Dialect.observe().
CONTENT = 1  # the frame carries non-empty content: text, reasoning, refusal or a tool-call delta
TERMINAL = 2  # the dialect's end-of-stream marker (normal or failed)
KEEPALIVE = 4  # a protocol-level keep-alive (Anthropic `ping`): timed as one, not as a frame
# For the stream's timeline only (what each frame was); the verdict reads the summary.
FINISH = 8  # the frame carries a finish reason (a choice's, `stop_reason`, the terminal status)
USAGE = 16  # the frame carries usage
ERROR = 32  # an in-band error: an `{"error": ...}` frame or an error event
MALFORMED = 64  # the frame (or part of it) could not be read as the dialect's shape
# Not a kind (the audit takes it off): the frame sets up what later frames are read against
# (a Responses item or part added, an Anthropic block started), so its skeleton is kept for
# evidence whatever its kind, for a replay to rebuild the order the verdict read.
SHAPE = 128

DONE_SENTINEL = b"[DONE]"


def is_done(data: bytes) -> bool:
    """The `[DONE]` sentinel, read as the openai SDKs read it (Python and Node: the data
    starts with it), so `[DONE] ` with a trailing space ends the stream for them and here."""
    return data[:6] == DONE_SENTINEL


# What a dialect keeps per choice, output item, content block or tool call, it keeps for at
# most this many of each in one stream: real streams have a few (OpenAI allows 128 choices). An
# upstream sending new ones without end would make the audit hold memory in step with its
# bytes; past the bound they are counted as malformed, not held.
MAX_KEYS = 256

Usage = dict[str, Any]

# Ids (a tool call's, an output item's) are dict keys for the whole stream; real ones are
# short (`call_...`, `fc_...`: under 64 characters).
MAX_ID_CHARS = 128


def id_key(value: str) -> str:
    """An id as the audit keeps it: a longer one by its digest, so an upstream's ids cannot make
    it hold their bytes (256 of them up to a frame each)."""
    if len(value) <= MAX_ID_CHARS:
        return value
    return "#" + hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


# A protocol word: a field name (`prompt_tokens`) or a value of the protocol's vocabulary
# (`stop`, `end_turn`, `chat.completion.chunk`), never what a model or a user wrote. What the
# record, the metrics' labels and the evidence keep of an upstream's strings is only ever such
# words.
_WORD = re.compile(r"[A-Za-z0-9_.:/-]{1,64}").fullmatch
# A run of letters and digits (between `_ . : / -`) of 16 or more with a digit in it, or of 32
# or more: a key or a token (`sk-proj-…`, `AKIA…`), never the protocol's vocabulary, whose
# longest words are joined by separators (`model_context_window_exceeded`). A finish reason or
# usage key of that shape reached a metric label and the logs unredacted.
# Also a UUID (`sk-lf-<uuid>`), and 20 characters or more that mix 3 digits with upper and
# lower case letters (a random token that `-` and `_` cut into short runs): the protocol's
# words are lower case, or upper case (Gemini's `MAX_TOKENS`), or camel case without digits.
_KEY_LIKE = re.compile(
    r"(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{16,}|[A-Za-z0-9]{32,}"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
).search
_MIXED = re.compile(r"(?=(?:[^0-9]*[0-9]){3})(?=(?:[^A-Z]*[A-Z]){2})(?=(?:[^a-z]*[a-z]){2})").match


def sdk_index(value: Any, lookup: bool = True) -> int | None:
    """An index as the SDKs' stream helpers (Python's and TypeScript's) take it: an int, a
    float with no fraction (JSON `0.0`) or a string of one; a bool only where an item is added
    (Python files it under 1, TypeScript reads no index there, and finds nothing at
    `output[true]`)."""
    if isinstance(value, int) and not (lookup and isinstance(value, bool)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) < 10 and value.isdecimal() and value == str(int(value)):
        return int(value)  # "3": Python's models make it 3, JavaScript's `output["3"]` finds it
    return None


def is_protocol_word(text: str) -> bool:
    return _WORD(text) is not None and _KEY_LIKE(text) is None and (len(text) < 20 or _MIXED(text) is None)


# A finish reason is kept only when it is a protocol word shaped as every API's finish reasons
# are (`stop`, `end_turn`, `MAX_TOKENS`: a letter, then letters, digits and `_`). Anything else
# (text, a megabyte of it, `hunter2:password/is.here`) is kept as OTHER_REASON: it is put in the
# log line, the evidence and the metrics' label.
MAX_REASON_CHARS = 40
_REASON = re.compile(r"[A-Za-z][A-Za-z0-9_]*").fullmatch
OTHER_REASON = "other"


# The finish reasons of a choice that failed mid-generation, an in-band failure, not a finish:
# OpenRouter's "error" ("Streaming Error Formats"), vLLM's "abort" (the engine dropped the
# request: paused, or aborted, with the client still reading), DeepSeek's
# "insufficient_system_resource" (its API reference: "the request is interrupted due to
# insufficient resource of the inference system"; the answer stops there).
FAILED_REASONS = frozenset({"error", "abort", "insufficient_system_resource"})


def failed_reason(reason: str) -> bool:
    """A finish reason that reports a failure: FAILED_REASONS, or an error's type as the
    reason (`overloaded_error`, `api_error`: Portkey turns Anthropic's mid-stream `error`
    event into a last chunk with its type as the finish reason, then `[DONE]`; an outside
    review). No finish reason of any API ends in `_error`."""
    return reason in FAILED_REASONS or reason.endswith("_error")


# An event of this name is an in-band failure whatever its data says: llama.cpp's Messages
# route sends `event: error` with data whose `type` is `server_error`, and its older servers
# an `error:` field, which the decoder reads as such an event (sse.py).
ERROR_EVENT = "error"


def reason_word(reason: str) -> str:
    """`reason` if it is a protocol word of at most MAX_REASON_CHARS shaped as a finish reason,
    else OTHER_REASON."""
    if len(reason) <= MAX_REASON_CHARS and _REASON(reason) is not None and is_protocol_word(reason):
        return reason
    return OTHER_REASON


@dataclass(slots=True)
class DialectSummary:
    terminal: bool = False  # the end marker was seen (normal or failed)
    # The upstream reported failure in-band (an error frame or event) and nothing finished after.
    failed: bool = False
    done: bool = False  # the `data: [DONE]` sentinel was seen
    finish_reasons: list[str] = field(default_factory=list)
    missing_finish_reason: bool = True  # some choice (or the whole stream) never got one
    usage: Usage | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_events: int = 0
    malformed_frames: int = 0
    tool_calls: int = 0
    invalid_tool_arguments: int = 0
    empty_tool_arguments: int = 0  # of those, calls with no argument text at all
    # Of the invalid, calls already broken before the end (ToolArgs.broken): judged however
    # the stream ended.
    broken_tool_arguments: int = 0
    anomalies: tuple[str, ...] = ()  # dialect-specific extras, already named
    # The stream came in another shape than the route's (llama.cpp's native frames on
    # `/completions`), which says itself whether it ends with `[DONE]`; None: the route's shape.
    expects_done: bool | None = None
    # Likewise whether it has an end marker to wait for (Ollama's lines, only when they are
    # Ollama's: the JSON-lines types are not its alone); None: the dialect's own.
    has_end_marker: bool | None = None
    # The stream was not the route's provider's (Ollama's path, Cohere's), and was read as on a
    # route with no dialect: the canary guard judges it as it judges that route's.
    read_as_other: bool = False
    # The upstream refused the request in-band as the client's own error (TGI's validation
    # error in a stream answered 200): the canary guard judges it no more than a 4xx.
    refused: bool = False


class Dialect:
    """Base class. Subclasses set the class attributes and implement observe/summary."""

    route: ClassVar[str]
    path_suffixes: ClassVar[tuple[str, ...]] = ()
    # Collections whose members stream the same shape: `/responses/{id}` (a stored response
    # retrieved with `stream=true`, resumed with `starting_after`).
    member_of: ClassVar[tuple[str, ...]] = ()
    # Paths a suffix cannot name without naming others too (`/threads/{id}/runs`, not any
    # `/runs`): searched last.
    path_pattern: ClassVar[re.Pattern[str] | None] = None
    expects_done: ClassVar[bool] = False  # whether a missing `[DONE]` is an anomaly
    expects_finish_reason: ClassVar[bool] = True
    expects_usage: ClassVar[bool] = True  # whether it reads usage, so asked-for usage can be missed
    # Usage is part of every stream of this shape, asked for or not (else only on include_usage).
    usage_always: ClassVar[bool] = False
    has_end_marker: ClassVar[bool] = True  # False: a clean end of the body is the stream's end
    # Its clients read a streaming JSON-lines body as a stream (Ollama's, Cohere v1's native
    # APIs; a route with no dialect); the others' SDKs read event streams only, and get
    # nothing of one (the openai SDK yields no chunk): `not_streamed`.
    reads_json_lines: ClassVar[bool] = False
    # False: a release after a wait, and clumps of frames after silences, are the shape's
    # nature (speech, made a sentence at a time), so neither `buffered` nor `bursty` is judged.
    paced_by_tokens: ClassVar[bool] = True
    # The fewest content frames `buffered` is judged on (None: --buffered-min-frames). Image
    # streams have at most three partial images, each seconds of the model's work apart.
    buffered_min_frames: ClassVar[int | None] = None
    # The SDK of the route reads a frame with no `data:` line as an event with empty data and
    # raises on it (the openai SDKs; SSEDecoder.empty_events): `malformed_frame`.
    empty_event_raises: ClassVar[bool] = True
    # The SDK of the route fails on any line but `data: ...` (a comment, a keep-alive: `: ping`;
    # an `event:`, `id:` or `retry:` line; `data:` without its space): google-genai reads each as
    # JSON and raises (SSEDecoder.comments, SSEDecoder.other_lines); so does ollama's client on
    # a blank line between JSON lines (JsonLinesDecoder.other_lines). Each is `malformed_frame`.
    data_lines_only: ClassVar[bool] = False
    # The API answers every request that asks for a stream with one (chat, completions,
    # responses, messages, runs): a whole body instead is a gateway's fault, and bad to the
    # canary guard. Not so where the provider itself may answer whole (OpenAI's whisper-1 on
    # transcriptions), nor on routes with no dialect.
    always_streams: ClassVar[bool] = False
    # The dialect's own anomalies (name -> when, for the README), reported through summary().
    extra_anomalies: ClassVar[dict[str, str]] = {}
    # What a stream of the shape ends with when it is not `[DONE]` (an end event, Ollama's done
    # line, Gemini's finish reasons): a truncated stream's reason says it lacked one.
    end_marker: ClassVar[str] = "end event"
    # The path a replay of its evidence asks (None: `/v1` and the first suffix).
    evidence_path: ClassVar[str | None] = None
    # A frame skeleton (evidence's form) of kind `other` that sets nothing up: a replay of
    # the evidence rebuilds a frame of that kind whose own skeleton was not kept from it,
    # where the stream's order matters (None: from the first skeleton of the kind).
    replay_filler: ClassVar[dict[str, Any] | None] = None

    __slots__ = ()

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        """The route's SDK loses `line`, the body's first, to a byte order mark before it
        (SSEDecoder.bom_line): the Python SDKs read the mark as part of the line's field name,
        where the spec's readers, browsers and the npm SDKs take it off. A `data:` line's data
        is lost: the openai SDK drops that chunk (its text, the message's role), huggingface_hub
        TGI's first token, the cohere SDK a data-only stream's `message-start`. A comment, a
        blank line or an `event:` line whose name the SDK does not need (it reads the data's
        `type`) loses nothing. `malformed_frame`."""
        return loses_data_line(line)

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool] | None:
        """What a request's target (path and query) says that its body does not: the model
        (None: not named) and whether a stream is asked for; None: nothing (the body says
        all). Gemini names both in its URL."""
        return None

    def observe(self, event: Event) -> int:
        raise NotImplementedError

    def observe_data(self, data: bytes) -> int:
        """`observe()` of a frame that is one `data:` line and nothing else (nearly every
        frame): the audit's fast path hands over the data alone, and a dialect that reads
        nothing but the data overrides this to skip making the event."""
        return self.observe(Event("", data))

    def trusts_type(self, name: str) -> bool:
        """Whether a frame too large to read, with no `event:` line, is known by the `"type"`
        its data begins with: where the route's SDK reads an event's type from its data (the
        openai SDKs on OpenAI's typed streams; not the Anthropic SDKs, which pass on only
        frames with an `event:` line). Never a normal end: unread, the frame may not parse,
        or say more after its first key, and the SDK would not see that end. A failure (an
        `error`, `response.failed`) is taken: parsed or not, the client's stream failed there
        (it was `complete` when left unnamed: a third pass)."""
        return False

    def observe_unread(self, name: str) -> int | None:
        """A frame too large to read (Event.unread), known only by its `event:` name, or its
        data's leading type where trusts_type ("" if neither came before the cap): its
        observe() bits when the name says what it was (an end event is taken as seen, what it
        carried is unknown), None when it cannot tell. A stream whose last frame could not be
        told is judged on its transport."""
        return None

    def summary(self) -> DialectSummary:
        raise NotImplementedError


def vertex_publisher(publishers: str) -> re.Pattern[str]:
    """A partner model's path on Vertex AI (`…/publishers/{publisher}/models/{model}:
    streamRawPredict`, `:rawPredict`): the provider's own stream, its model in the URL."""
    return re.compile(rf"/publishers/(?:{publishers})/models/([^/]+):(?:stream)?[rR]awPredict$")


def model_in_target(pattern: re.Pattern[str], target: str) -> tuple[str | None, bool] | None:
    """Dialect.target_info for a path that names the model (`pattern`'s first group)."""
    found = pattern.search(unquote(target.partition("#")[0].partition("?")[0]))
    return (found.group(1), False) if found else None


def load_object(data: bytes) -> dict[str, Any] | None:
    """The frame's JSON object; None when it is not one (the caller counts it malformed)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def is_error_frame(doc: dict[str, Any]) -> bool:
    """An OpenAI-style error frame: `{"error": {...}}` (`"error": null` on ordinary chunks is
    not), or older vLLM's `{"object": "error", "message": ...}`."""
    return bool(doc.get("error")) or doc.get("object") == "error"


# A usage object as logged: real ones have about ten counts, two levels deep (OpenAI's
# `completion_tokens_details.reasoning_tokens`, Anthropic's `cache_creation`). An upstream's
# deeper or wider object is cut there, so the stream_end line always renders (orjson refuses
# more than 255 levels) and stays a log line.
MAX_USAGE_DEPTH = 4
MAX_USAGE_FIELDS = 32  # per object
MAX_USAGE_COUNTS = 64  # in all
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1


def clean_usage(usage: Any) -> Usage | None:
    """Keep only the numeric parts of a usage object, so nothing but counts is ever logged."""
    if not isinstance(usage, dict):
        return None
    return _counts(usage, MAX_USAGE_DEPTH, [MAX_USAGE_COUNTS])


# A usage object that came in a frame this small is held as it came: what it can make is small
# too (a few dozen objects at most), and cleaning it per chunk would cost three times reading
# the frame (Gemini's `usageMetadata` and vLLM's continuous usage stats come with every chunk).
RAW_USAGE_FRAME = 2048


def held_usage(usage: Any, frame_bytes: int = RAW_USAGE_FRAME + 1) -> Any:
    """What a dialect holds of a usage object until its summary cleans it: as it came when its
    frame was small or it is a small object of whole numbers, else cleaned now. Held raw, the
    usage of nested arrays in a frame near --max-frame-bytes was 24 MB an open stream (an
    outside review)."""
    if frame_bytes <= RAW_USAGE_FRAME:
        return usage
    if type(usage) is dict and len(usage) <= MAX_USAGE_FIELDS:
        for key, value in usage.items():
            if type(value) is not int or type(key) is not str or len(key) > MAX_REASON_CHARS:
                return clean_usage(usage)
        return usage
    return clean_usage(usage)


def _counts(usage: dict[Any, Any], depth: int, left: list[int]) -> Usage:
    """`usage`'s numbers and nested objects of numbers, `depth` levels at most; `left`: how
    many more numbers the whole object may keep."""
    out: Usage = {}
    for key, value in usage.items():
        # A key is a protocol word (`prompt_tokens`): keys are logged, text in one is not.
        if not isinstance(key, str) or not is_protocol_word(key):
            continue
        kind = type(value)
        # Exact int and float first: what orjson gives (two comparisons, not two isinstance calls).
        if kind is int or kind is float or (kind is not bool and isinstance(value, (int, float))):
            if not (isinstance(value, float) or _INT_MIN <= value <= _UINT_MAX):
                continue  # an integer a JSON line cannot carry (orjson writes 64 bits at most)
            if left[0] <= 0:
                break
            left[0] -= 1
            out[key] = value
        elif depth > 1 and isinstance(value, dict):
            nested = _counts(value, depth - 1, left)
            if nested:
                out[key] = nested
        if len(out) >= MAX_USAGE_FIELDS:
            break
    return out


# A token count as the record keeps it: what a counter can add and a JSON line can carry (orjson
# writes integers of 64 bits at most). A negative or larger one (a sum of several near 2**64) is
# not a count: None, as if absent.
MAX_TOKENS = (1 << 63) - 1


def token_count(value: object) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_TOKENS else None


def token_counts(usage: Usage | None) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens from an OpenAI Chat, Responses or Anthropic usage object."""
    if not usage:
        return None, None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return token_count(prompt), token_count(completion)


def sse_field(line: bytes) -> tuple[bytes, bytes]:
    """An event-stream line's field name and value (one space after the colon taken off)."""
    field, _, value = line.partition(b":")
    return field, value[1:] if value[:1] == b" " else value


def loses_data_line(line: bytes) -> bool:
    """A `data:` line with data in it (Dialect.loses_to_bom)."""
    field, value = sse_field(line)
    return field == b"data" and bool(value)

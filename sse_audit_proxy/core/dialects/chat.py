"""OpenAI Chat Completions streams (`/v1/chat/completions`): `data:` JSON chunks, `[DONE]` last.

Deviations of real gateways handled here (the README lists them): usage on every chunk
(the last wins) or inside the last content chunk; `finish_reason` on a chunk that also
carries content, `""` as "none yet", or followed by more content; `reasoning` as well as
`reasoning_content`; tool-call deltas without `index` (read, and `malformed_frame`: the SDKs
lose such a call); chunks with empty `choices` that
are not usage (Azure `prompt_filter_results`); `"error": null` on ordinary chunks.

In-band failures: an `{"error": ...}` frame (vLLM, llama.cpp), older vLLM's `{"object":
"error", "message": ...}` frame, and a choice finishing with `finish_reason: "error"`
(OpenRouter's mid-stream failure, beside an `error` object or not). Nothing after one of them
undoes it (the openai SDKs raise at an `{"error": ...}` frame, and their callers never see
what follows). Nothing after `[DONE]` counts at all, where the SDKs stop reading: no error, and
no content, finish reason or usage either (a gateway's usage chunk sent after it never reached
a caller: `missing_usage`).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import msgspec

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    ERROR_EVENT,
    FINISH,
    MALFORMED,
    MAX_KEYS,
    TERMINAL,
    USAGE,
    Dialect,
    DialectSummary,
    clean_usage,
    failed_reason,
    held_usage,
    id_key,
    is_done,
    model_in_target,
    reason_word,
    token_counts,
    vertex_publisher,
)
from sse_audit_proxy.core.dialects.tool_args import CUT_REASONS, ToolArgs
from sse_audit_proxy.core.sse import Event

_CONTENT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


# gc=False: decoded JSON cannot form reference cycles, so these need no tracking.
# A choice is typed as the common chunk has it: one of another shape (an `index` that is not
# an integer, a `delta` that is not an object, a `finish_reason` that is not a string) fails
# to decode, and its frame is read as plain JSON values, where each field is checked.
class _Choice(msgspec.Struct, gc=False):
    index: int = -1  # none: the SDKs' helpers find a choice by it (-1 is none of theirs either)
    delta: dict[str, Any] | None = None
    finish_reason: str | None = None


class _XGroq(msgspec.Struct, gc=False):
    """Groq's `x_groq`, as its SDKs read it: the last chunk's `usage`, and an `error` saying why
    a stream stopped early (the SDK does not raise on it). Its other fields are not made."""

    usage: Any = None
    error: Any = None


class _Chunk(msgspec.Struct, gc=False):
    """What a Chat chunk is read for. Any other shape fails to decode into it (a ValidationError)
    and is read as plain JSON values instead."""

    error: Any = None
    usage: Any = None
    # UNSET when there is none, None when it is `null` (which the SDKs try to iterate).
    choices: list[_Choice] | msgspec.UnsetType | None = msgspec.UNSET
    x_groq: _XGroq | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_any = msgspec.json.Decoder().decode
_TOKEN_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _mistral_parts(content: Any) -> bool:
    """Content as Mistral streams a reasoning model's: a list of `{"type": "thinking",
    "thinking": [text parts]}` and `{"type": "text", "text": "..."}` parts. Mistral's SDKs and
    the AI SDK's openai-compatible provider read them and the openai Python SDK's `create`
    passes them on, so they are content, not a malformed frame (an outside review: every
    Magistral stream had `malformed_frame`, and a user's stop a bad canary stream). The AI
    SDK's openai provider rejects each such chunk, and the openai Python SDK's stream helper
    drops them: a client of those on a Mistral route is not served by this shape. Any other
    list (empty, another type, text that is not a string) no client reads: malformed."""
    return (
        type(content) is list
        and 0 < len(content) <= MAX_KEYS
        and all(type(part) is dict and _mistral_part(part) for part in content)
    )


def _mistral_part(part: dict[str, Any]) -> bool:
    kind = part.get("type")
    if kind == "text":
        return type(part.get("text")) is str
    if kind == "thinking":
        thinking = part.get("thinking")
        return type(thinking) is str or (
            type(thinking) is list
            and len(thinking) <= MAX_KEYS
            and all(
                type(p) is dict and p.get("type") == "text" and type(p.get("text")) is str for p in thinking
            )
        )
    return False


def _adds_tokens(usage: Any) -> bool:
    """Usage that a client adding up every chunk's usage counts: zeros add nothing (a gateway
    that sends zeros until the last chunk is read right by LangChain)."""
    if type(usage) is not dict:
        return False
    return any(type(n := usage.get(key)) is int and n > 0 for key in _TOKEN_COUNTS)


def _a_chunk(doc: Any) -> bool:
    """Not another `object` than a chunk: Azure's asynchronous content filter sends its
    annotations as choices without a `delta` in chunks whose `object` is `""`, and the
    Python helper skips those (the others read them without a delta)."""
    return not isinstance(doc, dict) or doc.get("object", "chat.completion.chunk") == "chat.completion.chunk"


_VERTEX = vertex_publisher("mistralai|ai21")


REPEATED_TOOL_CALL_FIELDS = "repeated_tool_call_fields"
REPEATED_USAGE = "repeated_usage"
REPEATED_FINISH_REASON = "repeated_finish_reason"
_ID, _NAME = 1, 2  # a tool call's fields that its first delta carries, and no later one


class ChatCompletions(Dialect):
    route = "chat_completions"
    always_streams = True
    # Mistral's agents stream Chat chunks too (`/v1/agents/completions`, `agent_id` for a model).
    path_suffixes: ClassVar[tuple[str, ...]] = ("/chat/completions", "/agents/completions")
    # Mistral's and AI21's models on Vertex AI stream Chat chunks at their `:streamRawPredict`.
    path_pattern: ClassVar[re.Pattern[str] | None] = _VERTEX
    expects_done = True
    extra_anomalies: ClassVar[dict[str, str]] = {
        REPEATED_TOOL_CALL_FIELDS: "(Chat) a tool call's `id` or `function.name` came again in a later "
        "delta (LiteLLM, Fireworks, DeepSeek and others send them with every piece): clients that "
        "accumulate deltas join them into a wrong id or name, the openai Python SDK's stream "
        "helper both (`call_1call_1`, `get_weatherget_weather`), LangChain the name (an id "
        "repeated unchanged it keeps)",
        REPEATED_USAGE: "(Chat) `usage` with token counts came in more than one chunk (a running "
        "total on every chunk, as vLLM's `continuous_usage_stats` sends it, or on the finish chunk "
        "and again in the usage chunk): the openai SDKs keep the last, but clients that add up each "
        "chunk's usage (LangChain's `ChatOpenAI` with `stream_usage`, pydantic-ai) count the tokens "
        "again for each",
        REPEATED_FINISH_REASON: "(Chat) a choice's `finish_reason` came again in a later chunk (some "
        "OpenRouter models send a finish chunk, then another with the usage): the SDKs keep the last, "
        "but LangChain joins them into `stopstop` in `response_metadata`, which code that tests the "
        'finish reason (`== "length"`) then misreads',
    }
    # Content comes in `delta` objects, and frames are decoded into _Chunk; Completions (content
    # in `text`) reads its frames as plain JSON values.
    _deltas: ClassVar[bool] = True

    __slots__ = (
        "_call_fields",
        "_calls",
        "_choices",
        "_done",
        "_errors",
        "_failed",
        "_finish",
        "_finish_repeats",
        "_finished_last",
        "_last_tool",
        "_malformed",
        "_names",
        "_repeats",
        "_tool_ids",
        "_tools",
        "_usage",
        "_usage_reports",
        "_x_usage",
    )

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool] | None:
        return model_in_target(_VERTEX, target) if cls.path_pattern is not None else None

    def __init__(self) -> None:
        self._choices: set[int] = set()
        self._finish: dict[int, str] = {}
        # Choices whose finish came after their content, in a frame without any: their calls'
        # arguments were whole by then, whatever followed on other choices. Not one whose finish
        # came with content, or before more (an early finish: Open WebUI's on reasoning chunks,
        # a gateway's on every chunk), which says nothing of its end.
        self._finished_last: set[int] = set()
        # Finish reasons of a choice that had one already, in chunks with a delta (LangChain,
        # which joins them, skips a chunk without one).
        self._finish_repeats = 0
        self._usage: Any = None
        self._usage_reports = 0  # chunks whose `usage` has token counts (_adds_tokens)
        # Usage where an OpenAI SDK does not look (Groq's `x_groq.usage`): its token counts are
        # reported when no `usage` came, but it is no usage the client asked for (missing_usage).
        self._x_usage: Any = None
        self._done = False
        self._errors = 0
        # An error frame came before `[DONE]`: the answer failed, whatever follows (the openai
        # SDKs raise at an `{"error": ...}` frame, so a finish after it never reaches their
        # callers).
        self._failed = False
        self._malformed = 0
        self._tools = ToolArgs()
        self._last_tool: dict[int, object] = {}  # per choice: key of the call being streamed
        self._tool_ids: dict[tuple[int, str], object] = {}  # (choice, call id) -> key
        self._call_fields: dict[object, int] | None = None  # key -> _ID | _NAME seen (few calls)
        self._calls: dict[int, int] | None = None  # per choice: calls started by `index`
        self._names: dict[tuple[int, int], str] | None = None  # (choice, index) -> its name
        self._repeats = 0

    def observe(self, event: Event) -> int:
        if event.event == ERROR_EVENT and not self._done:  # else the name and id say nothing here
            self._errors += 1
            self._failed = True
            return ERROR
        return self.observe_data(event.data)

    def observe_data(self, data: bytes) -> int:
        if self._done:  # the SDKs read no more
            return 0
        # Decoded straight into the few fields read here (msgspec skips the others without
        # making objects for them: about half the cost of a dict per frame, profiled).
        try:
            chunk = _decode_chunk(data)
        except (msgspec.DecodeError, RecursionError):  # ValidationError (another shape) too
            return self._observe_doc(data)  # `[DONE]`, another shape, or not JSON
        bits = 0
        groq = chunk.x_groq
        if groq is not None and groq.usage:
            self._x_usage = held_usage(groq.usage, len(data))
        if chunk.error or (groq is not None and groq.error):  # `"error": null` is not one
            self._errors += 1
            self._failed = True
            bits = ERROR
        usage = chunk.usage
        if usage:
            self._usage = held_usage(usage, len(data))  # continuous usage stats: the last one wins
            self._usage_reports += _adds_tokens(usage)
            bits |= USAGE
        choices = chunk.choices
        if not choices:  # the usage chunk, or Azure's `prompt_filter_results` chunk
            if choices is None or (choices is msgspec.UNSET and bits == USAGE):
                # `null`: the SDKs iterate it and raise, usage or not; none at all beside usage:
                # both SDKs' helpers raise there too, and the AI SDK rejects the chunk.
                self._malformed += 1
                return bits | MALFORMED
            if not bits:  # neither (rare): perhaps older vLLM's `{"object": "error", ...}`
                return self._observe_doc(data)
            return bits
        # _choice's rules for a choice of the typed shape, in this loop: a call per frame
        # costs more than the rules (the differential test holds the two readings equal).
        seen = self._choices
        limit = 0  # the frame's new choices' bound, once one comes (_new_choice)
        for choice in choices:
            index = choice.index
            if index not in seen:
                if len(seen) >= MAX_KEYS:  # new choices without end: counted, not held
                    self._malformed += 1
                    continue
                limit = limit or len(seen) + len(choices)
                self._new_choice(index, limit)
            delta = choice.delta
            said = False
            if delta:
                content = delta.get("content")
                if (content.__class__ is str and content and not delta.get("tool_calls")) or self._delta(
                    index, delta
                ):
                    bits |= CONTENT  # content after a finish_reason still reached the client
                    said = True
            elif delta is None and _a_chunk(_decode_any(data)):
                self._malformed += 1  # Python's helper reads every choice's delta: it raises
            reason = choice.finish_reason
            if reason:  # "" means none yet
                self._finish_repeats += delta is not None and index in self._finish
                self._finish[index] = reason_word(reason)
                self._finished(index, said)
                bits |= FINISH
                if failed_reason(reason):
                    bits = self._choice_failed(bits)
            elif said and self._finished_last:
                self._finished_last.discard(index)
        return bits

    def _choice_failed(self, bits: int) -> int:
        """A choice finished with `finish_reason: "error"`: an error frame, counted once per
        frame (OpenRouter's carries an `error` object as well)."""
        self._failed = True
        if bits & ERROR:
            return bits
        self._errors += 1
        return bits | ERROR

    def _new_choice(self, index: int, limit: int) -> None:
        """A choice first seen; `limit`: the choices seen before its frame and the frame's.
        Both SDKs' helpers keep choices in a list: Python's appends a new one and then looks
        it up by `index` (IndexError past the end), TypeScript's drops a negative one and
        fails at a gap (outside reviews). (A first chunk's choices may come in any order.)"""
        if not 0 <= index < limit:
            self._malformed += 1  # (-1: no `index` at all, or one not an integer)
        self._choices.add(index)

    def _choice(
        self, index: Any, delta: Any, reason: Any, text: Any = None, limit: int = 1, chunk: bool = True
    ) -> int:
        """One choice of a chunk: its content (in `delta`, or `text` for Completions) and
        its finish reason."""
        if type(index) is not int:
            # Python's helper finds the choice by it and raises (TypeError), the AI SDK rejects
            # the chunk, TypeScript's helper loses it (Completions: not judged).
            index = -1 if self._deltas else 0
        if index not in self._choices:
            if len(self._choices) >= MAX_KEYS:  # new choices without end: counted, not held
                self._malformed += 1
                return 0
            if self._deltas:
                self._new_choice(index, limit)
            else:
                self._choices.add(index)
        bits = 0
        if self._deltas or text is None:  # Mistral's FIM completions stream `delta`s too
            if type(delta) is dict:
                content = delta.get("content")
                if delta and (
                    (content.__class__ is str and content and not delta.get("tool_calls"))
                    or self._delta(index, delta)
                ):
                    bits = CONTENT  # content after a finish_reason still reached the client
            elif self._deltas and chunk:
                self._malformed += 1  # none, or not an object: Python's helper raises
        elif isinstance(text, str) and text:
            bits = CONTENT
        if reason is not None and not isinstance(reason, str):
            self._malformed += 1  # the AI SDK rejects the chunk
        elif reason:  # "" means none yet
            self._finish_repeats += delta is not None and index in self._finish
            self._finish[index] = reason_word(reason)
            self._finished(index, bool(bits))
            if failed_reason(reason):
                self._failed = True
                bits |= ERROR  # counted by _observe_doc, once per frame
            bits |= FINISH
            return bits
        if bits and self._finished_last:
            self._finished_last.discard(index)
        return bits

    def _finished(self, index: int, said: bool) -> None:
        if said:
            self._finished_last.discard(index)
        else:
            self._finished_last.add(index)

    def _observe_doc(self, data: bytes) -> int:
        """A frame read as plain JSON values: `[DONE]`, or any shape, checked step by step."""
        if self._done:  # Completions comes here first
            return 0
        if is_done(data):
            self._done = True
            return TERMINAL
        try:
            chunk = _decode_any(data)
        except (msgspec.DecodeError, RecursionError):
            chunk = None
        if not isinstance(chunk, dict):
            self._malformed += 1
            return MALFORMED
        bits = 0
        error = chunk.get("error")
        groq = chunk.get("x_groq")
        if type(groq) is dict:
            if groq.get("usage"):
                self._x_usage = held_usage(groq["usage"], len(data))
            error = error or groq.get("error")
        if error:  # is_error_frame, inlined (Completions reads every frame here)
            self._errors += 1
            self._failed = True
            bits = ERROR
        usage = chunk.get("usage")
        if usage:
            self._usage = held_usage(usage, len(data))
            self._usage_reports += _adds_tokens(usage)
            bits |= USAGE
        choices = chunk.get("choices")
        if not choices:
            if choices is None and self._deltas and ("choices" in chunk or bits == USAGE):
                self._malformed += 1  # `null`, or none beside usage: as in observe_data
                return bits | MALFORMED
            return bits or self._other_shape(chunk)
        if not isinstance(choices, list):
            self._malformed += 1
            return bits | MALFORMED
        limit, is_chunk = len(self._choices) + len(choices), _a_chunk(chunk)
        for choice in choices:
            if isinstance(choice, dict):
                get = choice.get
                bits |= self._choice(
                    get("index"), get("delta"), get("finish_reason"), get("text"), limit, is_chunk
                )
            else:
                self._malformed += 1
                bits |= MALFORMED
        if bits & ERROR and not error:  # a choice finished with "error": an error frame
            self._errors += 1
        return bits

    def _other_shape(self, chunk: dict[str, Any]) -> int:
        """A frame with no choices, usage or error: perhaps older vLLM's `{"object": "error",
        "message": ...}`."""
        if chunk.get("object") == "error":
            self._errors += 1
            self._failed = True
            return ERROR
        return 0

    def _delta(self, choice: int, delta: dict[str, Any]) -> bool:
        content = False
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):  # always taken in: its arguments are checked
            for call in calls:
                if isinstance(call, dict) and self._tool_call(choice, call):
                    content = True
        text = delta.get("content")
        if text is not None and text.__class__ is not str:
            if not _mistral_parts(text):
                self._malformed += 1  # the AI SDK rejects the chunk, Python's helper loses it
            elif not calls:
                return True
        elif text:  # the common delta, before the loop
            return True
        if content:
            return True
        for name in _CONTENT_FIELDS:
            if delta.get(name):
                return True
        audio = delta.get("audio")  # audio output (`modalities: ["text", "audio"]`)
        if isinstance(audio, dict) and (audio.get("data") or audio.get("transcript")):
            return True  # its first chunk has only an id
        return bool(delta.get("function_call"))  # the deprecated single-function form

    def _tool_call(self, choice: int, call: dict[str, Any]) -> bool:
        index = call.get("index")
        function = call.get("function")
        if type(index) is int or (type(index) is float and index.is_integer()):  # (`0.0` is read)
            self._call_at(choice, int(index), call, function)
        else:
            # Read (see _tool_key), but lost to clients (Gemini's OpenAI-compatible API sends
            # them): the AI SDK rejects the chunk, the openai npm helper drops the call, the
            # Python one raises at the call's second piece (openai-python#2806).
            self._malformed += 1
        if "index" not in call and not call.get("id") and not (isinstance(function, dict) and function):
            # Nothing of a call (Gemini's OpenAI-compatible API sends a thought signature alone
            # in `extra_content`): it opened an empty call, judged `invalid_tool_arguments`.
            return False
        call_id = call.get("id")
        kind = call.get("type")
        if (call_id is not None and call_id.__class__ is not str) or (
            kind is not None and kind != "function" and kind != "custom"
        ):
            self._malformed += 1  # the AI SDK rejects the chunk (and TypeScript's helper a type)
        key = self._tool_key(choice, call)
        custom = call.get("custom")
        if custom is not None or kind == "custom":  # its input is free text: counted, not judged
            self._tools.open_free(key)
            return bool(
                call.get("id") or (isinstance(custom, dict) and (custom.get("name") or custom.get("input")))
            )
        self._tools.open(key)
        fields = (_ID if call.get("id") else 0) | (
            _NAME if isinstance(function, dict) and function.get("name") else 0
        )
        if fields:
            self._count_fields(key, fields)
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            if arguments:
                self._tools.append(key, arguments)
                return True
        elif arguments is not None:
            self._tools.not_text(key)
            return True
        return bool(call.get("id") or (isinstance(function, dict) and function.get("name")))

    def _call_at(self, choice: int, index: int, call: dict[str, Any], function: Any) -> None:
        """The rules of a tool call's place. Both SDKs' helpers keep a choice's calls in a
        list: a call starts at the next index (Python's helper raises at a gap, TypeScript's
        at its end, and TypeScript's loses a negative one), its first piece names it (the AI
        SDK rejects a call without a name; TypeScript's helper too), and each later piece
        has a `function` object (Python's helper asserts it) and no other name (the AI SDK
        starts a second call at it, and parses neither's arguments: @ai-sdk/openai 3.0). A
        custom tool's call is not judged: none of them reads it."""
        calls = self._calls
        if calls is None:
            calls = self._calls = {}
        started = calls.get(choice, 0)
        name = function.get("name") if function.__class__ is dict else None
        if 0 <= index < started:  # a later piece
            if "custom" in call or call.get("type") == "custom":
                return
            if function.__class__ is not dict or (
                name is not None
                and (name.__class__ is not str or (name and self._other_name(choice, index, name)))
            ):
                self._malformed += 1
            return
        if index != started:
            self._malformed += 1  # a gap, or a negative index
            if index < 0:
                return
        if choice in calls or len(calls) < MAX_KEYS:
            calls[choice] = index + 1
        if call.get("type") == "custom":
            return
        if name.__class__ is not str or not name:
            self._malformed += 1
            return
        names = self._names
        if names is None:
            names = self._names = {}
        if len(names) < MAX_KEYS:
            names[choice, index] = id_key(name)

    def _other_name(self, choice: int, index: int, name: str) -> bool:
        """A later piece names its call otherwise than its first did (as far as names are held)."""
        first = self._names.get((choice, index)) if self._names is not None else None
        return first is not None and first != id_key(name)

    def _count_fields(self, key: object, fields: int) -> None:
        """A call's id or name again (REPEATED_TOOL_CALL_FIELDS): the SDK's helper joins them."""
        seen = self._call_fields
        if seen is None:
            seen = self._call_fields = {}
        had = seen.get(key, 0)
        if had & fields:
            self._repeats += 1
        if (had | fields) != had and (key in seen or len(seen) < MAX_KEYS):
            seen[key] = had | fields

    def _tool_key(self, choice: int, call: dict[str, Any]) -> object:
        """Which call a delta belongs to: by `index`, else by `id`, else the last one."""
        index = call.get("index")
        call_id = call.get("id")
        call_id = id_key(call_id) if isinstance(call_id, str) and call_id else None
        ids = self._tool_ids
        if isinstance(index, int):
            key: object = (choice, index)
            if call_id is not None and (choice, call_id) not in ids and len(ids) < MAX_KEYS:
                fields = self._call_fields
                function = call.get("function")
                if (
                    fields is not None
                    and fields.get(key, 0) & _ID
                    and isinstance(function, dict)
                    and function.get("name")
                ):
                    # Another id for a call that had one, with a name: the AI SDK starts a
                    # second call there and parses neither's arguments. (Without a name it
                    # reads one call; Python's helper joins the ids either way, as it joins
                    # the same one: REPEATED_TOOL_CALL_FIELDS.)
                    self._malformed += 1
                ids[choice, call_id] = key
        elif call_id is not None:  # some gateways omit `index`: a new id starts a new call
            key = ids.get((choice, call_id)) or (choice, "id", call_id)
            if len(ids) < MAX_KEYS:
                ids.setdefault((choice, call_id), key)
        else:
            key = self._last_tool.get(choice, (choice, 0))
        self._last_tool[choice] = key
        return key

    def _cut_calls(self) -> set[object]:
        """Each choice's last call, where a finish reason that cuts output short (CUT_REASONS,
        `length` above all) ended the choice: its arguments end where the cut fell."""
        return {
            self._last_tool[choice]
            for choice, reason in self._finish.items()
            if reason in CUT_REASONS and choice in self._last_tool
        }

    def _finished_calls(self) -> set[object]:
        """The calls of choices whose finish came after their content (keys begin with the
        choice): whole by then, though another choice was cut."""
        done = self._finished_last
        return (
            {key for key in self._tools.calls() if isinstance(key, tuple) and key[0] in done}
            if done
            else set()
        )

    def _extras(self) -> tuple[str, ...]:
        extras: tuple[str, ...] = (REPEATED_TOOL_CALL_FIELDS,) if self._repeats else ()
        if self._deltas:  # seen with Chat's clients only
            if self._usage_reports > 1:
                extras += (REPEATED_USAGE,)
            if self._finish_repeats:
                extras += (REPEATED_FINISH_REASON,)
        return extras

    def summary(self) -> DialectSummary:
        usage = clean_usage(self._usage)
        prompt, completion = token_counts(usage if usage is not None else clean_usage(self._x_usage))
        missing = not self._finish or any(i not in self._finish for i in self._choices)
        return DialectSummary(
            terminal=self._done,
            failed=self._failed,
            done=self._done,
            finish_reasons=[self._finish[i] for i in sorted(self._finish)],
            missing_finish_reason=missing,
            usage=usage,
            prompt_tokens=prompt,
            completion_tokens=completion,
            error_events=self._errors,
            malformed_frames=self._malformed + self._tools.dropped,
            tool_calls=self._tools.count,
            invalid_tool_arguments=self._tools.invalid(cut := self._cut_calls()),
            empty_tool_arguments=self._tools.empty(cut),
            broken_tool_arguments=self._tools.broken(cut, self._finished_calls()),
            anomalies=self._extras(),
        )

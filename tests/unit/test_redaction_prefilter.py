"""The redactor's quick pre-check (one search for a trigger word before the substitutions)
never lets through anything the full substitutions would have blanked."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.audit import Anomaly
from sse_audit_proxy.sinks.redaction import _TOKENS, REDACTED, Redactor

EXTRA = ("X-Tenant-Token",)
PIECES = st.sampled_from(
    [
        "Bearer ",
        "bearer\t",
        "BASIC ",
        "sk-",
        "sk-abcdefghijklmnop0123",
        "AIza",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0Kl",
        "glpat-",
        "xoxe-",
        "SG.",
        "eyJ",
        "a.b",
        "SK-ABCDEFGHIJKLMNOPQR",
        "Authorization",
        "authorization: ",
        "api-key=",
        "X-Api-Key:'",
        "cookie",
        "Set-Cookie: ",
        "x-tenant-token=",
        "proxy-authorization",
        "'",
        '"',
        ":",
        "=",
        " ",
        "\n",
        "trace",
        "model",
        "gpt-4o",
        "token",
        "key",
        "é",
        "0123456789",
        "-",
        "_",
    ]
)


def full_scrub(redactor: Redactor, text: str) -> str:
    """What scrub() did before the pre-check: every substitution, on every string."""
    text = redactor._line.sub(rf"\1\2{REDACTED}", text)
    for pattern, replacement in _TOKENS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=12).map("".join))
def test_prefiltered_scrub_equals_the_full_substitutions(text: str) -> None:
    redactor = Redactor(EXTRA)
    assert redactor.scrub(text) == full_scrub(redactor, text)


def test_plain_values_and_containers_pass_through_the_processor_unchanged() -> None:
    redactor = Redactor()
    event = {
        "frames": 204,
        "ttft_ms": 20.5,
        "done": True,
        "error": None,
        "usage": {"prompt_tokens": 5},
        "anomalies": ["missing_done"],
        "route": "chat",
    }
    assert redactor(None, "info", dict(event)) == event


def test_string_enums_come_out_as_plain_strings_as_the_substitutions_made_them() -> None:
    # Anomalies are StrEnum members; the console renderer would show an enum's repr.
    event = Redactor()(None, "info", {"anomalies": [Anomaly.MISSING_DONE], "outcome": "complete"})
    assert event == {"anomalies": ["missing_done"], "outcome": "complete"}
    assert [type(a) for a in event["anomalies"]] == [str]


class _Word(StrEnum):
    SECRET = "Bearer abcdefghijklmnop"
    PLAIN = "stop"


class _LoudKey(str):
    """A str whose lower() is not str's: the key cache must not stand in for it."""

    __slots__ = ()

    def lower(self) -> str:
        return "authorization"


def general_processor(redactor: Redactor, event: dict[Any, Any]) -> dict[Any, Any]:
    """The processor as it was before the untouched-value check: every value through _clean."""
    return {k: REDACTED if k.lower() in redactor._keys else redactor._clean(v) for k, v in event.items()}


def _kinds(value: Any) -> Any:
    """The value's types, all the way down (a StrEnum and a str render differently)."""
    if isinstance(value, dict):
        return (dict, [(type(k), _kinds(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value), [_kinds(v) for v in value])
    return type(value)


_FIELD_NAMES = st.sampled_from(
    ["usage", "prompt_tokens", "api_key", "Api-Key", "cookie", "X-Tenant-Token", "x_tenant_token", "trace_id"]
) | st.text(max_size=6)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson renders
    | st.floats(allow_nan=False)
    | st.sampled_from(list(_Word))
    | st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=6).map("".join)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_FIELD_NAMES, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_FIELD_NAMES, _VALUES, max_size=8))
def test_processor_equals_cleaning_every_value(event: dict[str, Any]) -> None:
    redactor = Redactor(EXTRA)
    expected = general_processor(redactor, event)
    for _ in range(2):  # the second time the field names come from the cache
        got = redactor(None, "info", dict(event))
        assert got == expected
        assert _kinds(got) == _kinds(expected)
        assert orjson.dumps(got) == orjson.dumps(expected)


def test_a_key_that_only_looks_like_a_cached_name_is_still_checked() -> None:
    redactor = Redactor()
    redactor(None, "info", {"note": "x"})  # "note" now remembered as a fine name
    assert redactor(None, "info", {_LoudKey("note"): "x"}) == {"note": REDACTED}


# Characters re's IGNORECASE equates with an ASCII letter of a trigger word, though not ASCII.
_EQUIVALENTS = st.sampled_from(["\u017f", "\u212a", "\u0131", "\u0130", "\u212b", "K", "S", "I"])


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.one_of(PIECES, _EQUIVALENTS, st.text(alphabet=st.characters(max_codepoint=127), max_size=6)),
        max_size=10,
    ).map("".join),
    st.sampled_from([(), EXTRA, ("X-\u0130d",), ("x-a\u017f",)]),
)
def test_ascii_prefilter_equals_the_case_blind_search(text: str, extra: tuple[str, ...]) -> None:
    redactor = Redactor(extra)
    assert redactor._suspect(text) == (redactor._suspect_any(text) is not None)
    assert redactor.scrub(text) == full_scrub(redactor, text)


def test_case_blind_equivalents_outside_ascii_still_trigger_the_substitutions() -> None:
    redactor = Redactor()
    # U+017F (long s) and U+0131 (dotless i) match `s` and `i` case-blind: not ASCII text,
    # so the ASCII path must not be the one that decides.
    for text in ("ba\u017fic abc", "\u017fk-abcdefghijklmnopqrst", "author\u0131zation: x"):
        assert redactor._suspect(text)
        assert redactor.scrub(text) == full_scrub(redactor, text)


# Log events as the JSON renderer sees them: secret-named keys (as headers and as log keys
# spell them), trigger words in strings, in nested containers, in any case and script.
KEYS = st.one_of(
    st.sampled_from(
        [
            "trace_id",
            "model",
            "Authorization",
            "api_key",
            "api_\u212aey",
            "x-api-key",
            "X_Tenant_Token",
            "cookie",
        ]
    ),
    st.text(max_size=6),
)
WORDS = st.lists(
    st.one_of(PIECES, st.sampled_from(["\u017fk-", "\u212aey", "BEARER"]), st.text(max_size=8)), max_size=8
)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), WORDS.map("".join)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_a_json_line_is_redacted_as_the_processor_redacts_each_field(event: dict[str, Any]) -> None:
    import structlog

    from sse_audit_proxy.sinks.logs import RedactedJSON

    redactor = Redactor(EXTRA)
    render = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    expected = render(None, "info", redactor(None, "info", dict(event)))
    assert RedactedJSON(redactor)(None, "info", dict(event)) == expected


def test_a_line_with_no_trigger_word_is_searched_once_and_left_as_rendered() -> None:
    redactor = Redactor(EXTRA)
    assert not redactor.suspect_line(b'{"trace_id":"abc","frames":204,"usage":{"prompt_tokens":5}}')
    assert redactor.suspect_line(b'{"api_key":"x"}')  # a key as a log key spells a header name
    assert redactor.suspect_line('{"m":"\u017fk-0123456789abcdefgh"}'.encode())  # (?i): U+017F is an s
    assert Redactor(['x"quoted']).suspect_line(b"{}")  # a name JSON would escape: always per field


def test_a_line_whose_only_secret_is_a_bearer_token_is_redacted() -> None:
    """An exception's message can carry an `Authorization` value with no header name beside it;
    the line's pre-check must still send it to the substitutions (a third mutation review: with
    `bearer` left out of its words, the token was written as it came)."""
    from sse_audit_proxy.sinks.logs import RedactedJSON

    event = {"event": "proxy_failed", "error": "upstream said: Bearer abcdef0123456789XYZ rejected"}
    line = RedactedJSON(Redactor())(None, "error", dict(event))
    assert b"abcdef0123456789XYZ" not in line and REDACTED.encode() in line, line

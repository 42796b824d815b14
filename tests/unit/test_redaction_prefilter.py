"""The redactor's quick pre-check (one search for a trigger word before the substitutions)
never lets through anything the full substitutions would have blanked."""

from __future__ import annotations

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

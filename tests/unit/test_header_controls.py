"""Control characters in the upstream's header bytes are written `\\xNN` in evidence.

Header bytes are decoded as latin-1, so 0x80-0x9f are C1 controls (U+009B is a terminal's
CSI) and went raw into the JSON log lines and the evidence. printable() escapes C0, DEL and
C1, and keeps a value within MAX_HEADER_VALUE without cutting an escape in two."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.sinks.evidence import MAX_HEADER_VALUE, printable, redacted_headers
from sse_audit_proxy.sinks.redaction import Redactor

LATIN1 = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=MAX_HEADER_VALUE)


CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


@settings(max_examples=500, deadline=None)
@given(LATIN1)
def test_no_control_character_is_left_and_no_escape_is_cut(text: str) -> None:
    out = printable(text)
    assert CONTROL.search(out) is None
    units = [f"\\x{ord(c):02x}" if CONTROL.fullmatch(c) else c for c in text]
    full = "".join(units)
    assert len(out) <= max(len(text), MAX_HEADER_VALUE)
    assert full.startswith(out)
    if out != full:  # cut: at the end of a character or an escape, at most one escape short
        ends = {sum(map(len, units[:i])) for i in range(len(units) + 1)}
        assert len(out) in ends and len(out) > MAX_HEADER_VALUE - 4


def test_a_head_s_controls_are_escaped_in_names_and_values() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: \x9b2J\x9b31mFAKE\x9c\r\nVia: a\tb\r\n\r\n"
    assert redacted_headers(head, Redactor()) == [["Server", "\\x9b2J\\x9b31mFAKE\\x9c"], ["Via", "a\\x09b"]]

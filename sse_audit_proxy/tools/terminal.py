"""Text from the wire, made safe to print on an operator's terminal.

An upstream (or an evidence file) can put control characters in anything the tools print: an
error message, a header value, a finish reason. Printed raw, ESC sequences clear the screen,
retitle the window or draw a forged verdict, and a line feed starts a line the tool did not
write. Each C0 control (line feeds included), DEL and each C1 control is shown as `\\xNN`
instead; the tools' own styling is added around the escaped text, never inside it.
"""

from __future__ import annotations

_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
_ESCAPED = str.maketrans({c: f"\\x{c:02x}" for c in _CONTROLS})


def printable(text: str) -> str:
    """`text` with every C0/C1 control character and DEL written as `\\xNN`."""
    return text.translate(_ESCAPED)

"""A failure as a log line names it: where in the code, never what it was handling."""

from __future__ import annotations

import errno
import os.path
import traceback

# Frames of a failure's stack a log line names (the innermost ones).
STACK_FRAMES = 12


def failure(exc: BaseException) -> dict[str, object]:
    """A failure as a log line shows it: the exception's type, where it was raised (`at`) and
    the code locations that led there (`stack`), never its message or a formatted traceback.
    Code that reads requests and frames can quote them (a presented key's bytes were in one),
    and no secret, prompt or completion text may reach a log."""
    stack = [
        f"{os.path.basename(frame.f_code.co_filename)}:{line} {frame.f_code.co_name}"
        for frame, line in traceback.walk_tb(exc.__traceback__)
    ][-STACK_FRAMES:]
    fields: dict[str, object] = {"exception": type(exc).__name__, "at": stack[-1] if stack else None}
    if isinstance(exc, OSError) and exc.errno is not None:
        fields["errno"] = errno.errorcode.get(exc.errno, exc.errno)
    fields["stack"] = stack
    return fields

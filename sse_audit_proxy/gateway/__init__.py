"""The demo gateway: an OpenAI-compatible upstream that reproduces the faults the proxy catches.

`plan` decides the answer, `shapes` renders it in each API's wire shape, `script` times it
per scenario, `app` serves it, `command` is `sse-audit-proxy gateway`.
"""

from .app import create_app, start
from .command import add_parser, add_timing_options, run, timing_from
from .script import Timing

__all__ = ["Timing", "add_parser", "add_timing_options", "create_app", "run", "start",
           "timing_from"]

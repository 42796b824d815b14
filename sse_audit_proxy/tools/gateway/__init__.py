"""The demo gateway: an OpenAI-compatible upstream that reproduces the faults the proxy catches.

`plan` decides the answer, `shapes` renders it in each API's wire shape, `script` times it
per scenario, `app` serves it, `command` is `sse-audit-proxy gateway`.
"""

from sse_audit_proxy.tools.gateway.app import create_app, start
from sse_audit_proxy.tools.gateway.command import add_parser, add_timing_options, run, timing_from
from sse_audit_proxy.tools.gateway.script import Timing

__all__ = ["Timing", "add_parser", "add_timing_options", "create_app", "run", "start", "timing_from"]

"""The cutover probe: the streaming readiness checklist run against a route, with evidence.

`prompts` says what is asked, `chat` and `responses` build the requests and read the answers
in each API's shape, `client` sends them and captures the raw bytes with arrival times (fed to
the proxy's own StreamAudit), `gates` judges, `runner` orders the requests, `report` renders
the table, the JSON report and the raw captures, `command` is `sse-audit-proxy probe`.
"""

from sse_audit_proxy.tools.probe.command import add_parser, run

__all__ = ["add_parser", "run"]

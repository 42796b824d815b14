"""`sse-audit-proxy demo`: the demo gateway, the proxy and traffic in one process, with a live view."""

from sse_audit_proxy.tools.demo.command import add_parser, run

__all__ = ["add_parser", "run"]

"""Entry point: `sse-audit-proxy COMMAND ...` (also `python -m sse_audit_proxy`)."""

from __future__ import annotations

import sys

from sse_audit_proxy import __version__
from sse_audit_proxy.cli import serve
from sse_audit_proxy.cli.options import Parser, settings
from sse_audit_proxy.tools import bench, case, demo, gateway, probe, traffic

COMMANDS = (serve, gateway, traffic, demo, probe, bench, case)


def build_parser() -> Parser:
    parser = Parser(
        prog="sse-audit-proxy", description="Audit OpenAI-compatible event streams in the request path."
    )
    parser.add_argument("--version", action="version", version=f"sse-audit-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    # serve tells a misspelt variable of its own from another command's (traffic's, probe's)
    parser.set_defaults(every_setting=frozenset().union(*(settings(p) for p in sub.choices.values())))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The generated tables in docs/: `python -m sse_audit_proxy.tools.doctables` rewrites them in place.

A generated table sits between two marker comments in a docs page:

    <!-- doctables: flags serve -->
    ...
    <!-- /doctables -->

and what goes between them is decided here, from the code that defines it, so the docs cannot
drift from the program:

    flags COMMAND   the command's flags, from the same argparse definitions as its --help
                    (flag, SSE_AUDIT_* variable where the flag has one, default, meaning)
    scenarios       the demo gateway's scenarios and the verdict each gets (tools/scenarios.py)
    verdicts        the outcome and anomaly rules (core/verdict.py)

`--check` rewrites nothing and exits 1 naming every page whose tables are stale (a unit test
does the same).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sse_audit_proxy.cli import serve
from sse_audit_proxy.cli.options import ENV_PREFIX, Parser, size
from sse_audit_proxy.core import verdict
from sse_audit_proxy.tools import bench, case, demo, gateway, probe, scenarios, traffic

# The commands of `sse-audit-proxy`, in the entry point's order (a test keeps the two equal:
# the entry point sits above the tools and cannot be imported from here).
COMMANDS = (serve, gateway, traffic, demo, probe, bench, case)
COMMAND = "python -m sse_audit_proxy.tools.doctables"

BLOCK = re.compile(r"(<!-- doctables: (?P<name>[^>]*?) -->\n)(?P<body>.*?)(<!-- /doctables -->)", re.S)
_ENV = re.compile(r" \[env: (?P<env>[A-Z0-9_]+)\]$")
_DEFAULT = re.compile(r" \(default: (?P<default>[^()]*(?:\([^()]*\)[^()]*)*)\)(?P<rest>(?: \[[^\]]*\])?)$")


@contextmanager
def _without_env() -> Iterator[None]:
    """The parsers as a fresh shell sees them: `option()` takes its defaults from SSE_AUDIT_*."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, built by the command's own `add_parser`, as `--help` shows it."""
    with _without_env():
        root = Parser(prog="sse-audit-proxy")
        sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
        for command in COMMANDS:
            command.add_parser(sub)
    return dict(sub.choices)


def _size(n: int) -> str:
    for suffix, scale in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def _text(value: str) -> str:
    """Table-cell text: pipes escaped outside code spans, `<` never taken for HTML."""
    parts = value.split("`")
    for i in range(0, len(parts), 2):  # the even parts lie outside code spans
        parts[i] = parts[i].replace("|", "\\|").replace("<", "&lt;")
    return "`".join(parts)


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    *short, long = action.option_strings
    metavar = f" {action.metavar}" if isinstance(action.metavar, str) and action.nargs != 0 else ""
    return ", ".join([*(f"`{s}`" for s in short), f"`{long}{metavar}`"])


def _default(action: argparse.Action, shown: str | None) -> str:
    if action.required:
        return "required"
    if action.type is size and isinstance(action.default, int):
        return f"`{_size(action.default)}`"
    if shown is not None:  # what --help says, in the words of the flag's author
        return f"`{shown}`" if " " not in shown else _text(shown)
    if action.nargs == 0:
        return "off"
    if action.default in (None, [], ()):
        return ""
    return f"`{action.default}`"


def flag_table(parser: argparse.ArgumentParser) -> str:
    """One row per flag (and positional argument): flag, environment variable, default, meaning."""
    rows: list[tuple[str, str, str, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        text = (action.help or "").replace("%%", "%")
        env = ""
        if m := _ENV.search(text):
            env, text = f"`{m['env']}`", text[: m.start()]
        shown = None
        if m := _DEFAULT.search(text):
            shown, text = m["default"], text[: m.start()] + m["rest"]
        rows.append((_flag(action), env, _default(action, shown), _text(text)))
    with_env = any(env for _, env, _, _ in rows)
    head = ["flag", "environment", "default", "meaning"] if with_env else ["flag", "default", "meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for flag, env, default, meaning in rows:
        cells = [flag, env, default, meaning] if with_env else [flag, default, meaning]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(name: str) -> str:
    """The markdown of the generated table NAME (see the module's docstring)."""
    kind, _, arg = name.strip().partition(" ")
    if kind == "flags":
        parsers = command_parsers()
        if arg not in parsers:
            raise ValueError(f"unknown command {arg!r} in <!-- doctables: {name} -->")
        return flag_table(parsers[arg])
    if kind == "scenarios" and not arg:
        return scenarios.markdown_table()
    if kind == "verdicts" and not arg:
        return verdict.markdown_tables()
    raise ValueError(f"unknown generated table <!-- doctables: {name} -->")


def rewrite(text: str) -> str:
    """TEXT with every generated table made anew."""
    return BLOCK.sub(lambda m: m[1] + render(m["name"]) + m[4], text)


def pages(docs: Path) -> list[Path]:
    """The pages of DOCS that hold at least one generated table."""
    return sorted(p for p in docs.rglob("*.md") if BLOCK.search(p.read_text(encoding="utf-8")))


def stale(docs: Path) -> list[Path]:
    """The pages of DOCS whose generated tables differ from what the code says today."""
    out = []
    for page in pages(docs):
        text = page.read_text(encoding="utf-8")
        if rewrite(text) != text:
            out.append(page)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--docs", type=Path, default=Path("docs"), help="the docs directory (default: docs)")
    ap.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 when a table is stale")
    args = ap.parse_args(argv)
    if not args.docs.is_dir():
        ap.error(f"no docs directory at {args.docs}")
    if args.check:
        old = stale(args.docs)
        for page in old:
            print(f"{page}: generated tables are stale; run `{COMMAND}`", file=sys.stderr)
        return 1 if old else 0
    for page in pages(args.docs):
        text = page.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

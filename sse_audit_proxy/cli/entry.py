"""The console script's entry: the commands' modules are imported inside the guard for Ctrl-C
(their import takes about half a second, and a Ctrl-C in it printed a traceback)."""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from sse_audit_proxy.cli.main import main
    except KeyboardInterrupt:
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())

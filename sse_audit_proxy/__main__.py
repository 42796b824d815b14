import sys

from sse_audit_proxy.cli.entry import run

sys.exit(run())

"""`sse-audit-proxy bench`: the performance benchmark (issue 7).

`workloads` says what is measured, `client` is the load generator, `procs` starts, pins and
accounts for the processes, `harness` runs a workload against a target, `report` makes the
medians and the table, `command` is the CLI.
"""

from sse_audit_proxy.tools.bench.command import add_parser, run

__all__ = ["add_parser", "run"]

"""The `sse-audit-proxy` command: entry point, options shared by the subcommands, `serve`."""

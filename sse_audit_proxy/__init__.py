"""sse-audit-proxy: an unbuffered reverse proxy that audits OpenAI-compatible event streams."""

__version__ = "0.1.0"

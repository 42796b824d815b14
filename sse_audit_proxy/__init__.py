"""sse-audit-proxy: an unbuffered reverse proxy that audits OpenAI-compatible event streams."""

# The only place the version is written: pyproject.toml reads it (dynamic version).
__version__ = "0.1.0"

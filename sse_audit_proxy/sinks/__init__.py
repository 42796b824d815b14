"""What hangs off the end of a stream: metrics, logs (with redaction), recent streams, evidence."""

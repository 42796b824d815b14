"""Log lines written off the event loop, into a bounded buffer.

A log line written straight to stdout blocks the loop when whatever reads stdout stops
reading (a stalled log shipper, a paused terminal, a `| tee` to a full disk): once the pipe's
64 KiB were full, every stream through the proxy froze, about 100 streams after the reader
stopped. The loop now only appends a line to a buffer; a thread writes the buffer out. A
buffer over its limit drops new lines and counts them (`sse_audit_log_lines_dropped_total`,
reason `buffer_full`); an output that is gone for good (EPIPE, a closed descriptor) drops them
all (`output_closed`). When the writer catches up after a drop it writes one
`log_lines_dropped` line saying how many. Docker's non-blocking log mode and Envoy's access
log buffer make the same trade: a stream is never held for a log line.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
from collections import deque
from collections.abc import Callable

# What the buffer may hold before new lines are dropped: at about 1 KiB a line, several
# minutes of a busy proxy's lines while the reader is stalled.
DEFAULT_LIMIT = 16 << 20
BUFFER_FULL = "buffer_full"
OUTPUT_CLOSED = "output_closed"
DROP_REASONS = (BUFFER_FULL, OUTPUT_CLOSED)


class LineWriter:
    """A file-like sink for whole lines (`write` takes bytes or str; `flush` is a no-op: lines
    go out as soon as the thread gets to them). One producer thread (the loop) is assumed for
    the counters; lines from other threads are still written whole and in order of arrival."""

    def __init__(
        self,
        fd: int,
        limit: int = DEFAULT_LIMIT,
        notice: Callable[[int], bytes] | None = None,
    ) -> None:
        self._fd = fd
        self._limit = limit
        self._notice = notice  # the line saying that N lines were dropped
        self._lines: deque[bytes] = deque()
        # Each counter has one writer, so no update is lost without a lock: queued and dropped
        # by producers, written (and given up) by the thread.
        self._queued = 0
        self._written = 0
        self._dropped = 0
        self._lost = 0  # lines the thread had taken when the output went away
        self._reported = 0
        self.closed = False  # the output is gone: nothing more is written
        self.on_drop: Callable[[str], None] | None = None
        self._lock: int | None = None  # share(): a lock other writers to the output take too
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sse-audit-log-writer", daemon=True)
        self._thread.start()

    def write(self, line: bytes | str) -> int:
        data = line.encode("utf-8", "backslashreplace") if isinstance(line, str) else line
        if self.closed or self._queued - self._written + len(data) > self._limit:
            self._drop(OUTPUT_CLOSED if self.closed else BUFFER_FULL)
            return 0
        self._queued += len(data)
        self._lines.append(data)
        if not self._wake.is_set():
            self._wake.set()
        return len(line)

    def flush(self) -> None:
        pass

    def share(self, lock_fd: int) -> None:
        """Other processes write lines to the same output (`--workers`): each line is written
        holding an exclusive `flock` of `lock_fd`, a file they all opened. A pipe keeps one
        write whole only up to 4 KiB (PIPE_BUF); a longer line written into a full pipe went
        out in pieces, another worker's lines between them: broken lines, lost records
        (outside review). The kernel lets go of a killed process's lock."""
        self._lock = lock_fd

    @property
    def dropped(self) -> int:
        """Lines that were never written."""
        return self._dropped + self._lost

    @property
    def pending(self) -> int:
        """Bytes buffered and not yet written."""
        return self._queued - self._written

    def close(self, timeout: float) -> int:
        """Write out what is buffered, waiting at most `timeout` seconds for a stalled reader.
        Returns how many lines were not written and not said to be (dropped since the last
        `log_lines_dropped` line, or still buffered, one in the thread's hands included)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        stuck = self._thread.is_alive()  # then blocked in a write of a line it took
        return self.dropped - self._reported + len(self._lines) + stuck

    def _drop(self, reason: str) -> None:
        self._dropped += 1
        hook = self.on_drop
        if hook is not None:
            hook(reason)

    def _run(self) -> None:
        lines = self._lines
        while True:
            self._wake.wait()
            self._wake.clear()
            while lines:
                data = lines.popleft()
                if not self.closed:
                    self._write_all(data)
                if self.closed:
                    self._lost += 1
                    if self.on_drop is not None:
                        self.on_drop(OUTPUT_CLOSED)
                self._written += len(data)
                if not lines:
                    self._report()
            if self._stopping and not lines:
                return

    def _report(self) -> None:
        """Caught up: say how many lines were dropped since the last time it was said."""
        dropped = self.dropped
        if dropped == self._reported or self._notice is None or self.closed:
            return
        self._write_all(self._notice(dropped - self._reported))
        self._reported = dropped

    def _write_all(self, data: bytes) -> None:
        lock = self._lock
        if lock is None:
            self._write_out(data)
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            self._write_out(data)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_out(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:  # someone made the shared descriptor non-blocking
                select.select([], [self._fd], [], 1.0)
                continue
            except OSError:  # EPIPE, EBADF, EIO: the output is gone for good
                self.closed = True
                return
            view = view[n:]

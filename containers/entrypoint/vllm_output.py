"""vLLM's output, passed through line by line and kept until the server is healthy.

The container's log stays exactly what vLLM printed (stdout and stderr, merged, on stdout);
the start-up lines are kept to read the boot phases from (model_store/ops/boot_log.py).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import BinaryIO

# A start-up log is a few hundred lines; a server that never gets healthy keeps the last ones.
KEPT_LINES = 5000


class VllmOutput(threading.Thread):
    """Copies the child's output to our stdout; `boot_log()` returns what came before `ready()`."""

    def __init__(self, stream: BinaryIO, sink: BinaryIO | None = None):
        super().__init__(name="vllm-output", daemon=True)
        self.stream, self.sink = stream, sink or sys.stdout.buffer
        self._lines: deque[bytes] = deque(maxlen=KEPT_LINES)
        self._keeping = True
        self._lock = threading.Lock()

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            self.sink.write(line)
            self.sink.flush()
            with self._lock:
                if self._keeping:
                    self._lines.append(line)

    def ready(self) -> str:
        """Stop keeping lines; the start-up log so far."""
        with self._lock:
            self._keeping = False
            return b"".join(self._lines).decode(errors="replace")

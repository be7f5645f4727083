"""What a command tells its user: progress lines on stderr as things happen, and with ``--json``
one JSON object on stdout at the end (shared/DESIGN.md). Passwords never pass through here."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Reporter:
    """Progress for people (stderr) and a final machine-readable report (stdout)."""

    def __init__(
        self, *, json_output: bool = False, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.json_output = json_output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.data: dict[str, Any] = {}
        self._start = time.monotonic()

    def progress(self, text: str) -> None:
        """One line of progress: ``[  0.12s] registering ...``."""
        elapsed = time.monotonic() - self._start
        print(f"[{elapsed:7.2f}s] {text}", file=self.err, flush=True)

    def section(self, name: str) -> dict[str, Any]:
        """The JSON report's section ``name`` (created empty), to fill in."""
        return self.data.setdefault(name, {})

    def finish(self) -> None:
        """Print the JSON report, if asked for."""
        if self.json_output:
            print(json.dumps(self.data, sort_keys=False), file=self.out, flush=True)

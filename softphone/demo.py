"""``softphone demo`` (work in progress)."""

from __future__ import annotations

import argparse

from softphone.config import Account
from softphone.report import Reporter

EXIT_OK, EXIT_FAILED = 0, 1


async def run_demo(account: Account, args: argparse.Namespace, reporter: Reporter) -> int:
    """Run the demo; returns the exit status."""
    reporter.progress("demo: not ready yet")
    return EXIT_FAILED

"""``softphone tui`` (work in progress)."""

from __future__ import annotations

import argparse

from softphone.config import Account
from softphone.report import Reporter

EXIT_OK, EXIT_FAILED = 0, 1


def run_tui(account: Account, args: argparse.Namespace, reporter: Reporter) -> int:
    """Run the full-screen phone; returns the exit status."""
    reporter.progress("tui: not ready yet")
    return EXIT_FAILED

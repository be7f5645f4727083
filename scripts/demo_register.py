"""The demo until `softphone demo` exists: start a local Kamailio on 127.0.0.1 (the test suite's
registrar config, digest auth), then register alice with `softphone register --once` and show
what happened. Everything stays on loopback; Kamailio is stopped at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.peers.kamailio import DEFAULT_USERS, Kamailio  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="softphone-demo-") as tmp:
        with Kamailio(Path(tmp), tls=False) as kamailio:
            print(f"Kamailio registrar running at {kamailio.server()} (domain {kamailio.domain})")
            env = dict(os.environ, DEMO_SIP_PASSWORD=DEFAULT_USERS["alice"])
            argv = [
                str(Path(sys.executable).parent / "softphone"),
                "--server", kamailio.server(), "--user", f"alice@{kamailio.domain}",
                "--password-env", "DEMO_SIP_PASSWORD", "--bind", "127.0.0.1:0", "--json",
                "register", "--once",
            ]  # fmt: skip
            print("$ softphone " + " ".join(argv[1:]), flush=True)
            return subprocess.run(argv, env=env, timeout=60).returncode


if __name__ == "__main__":
    sys.exit(main())

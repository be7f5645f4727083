"""A throw-away PKI made with the openssl command: one CA and one server certificate."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestPki:
    """Paths of a CA certificate and a server certificate/key signed by it (PEM)."""

    __test__ = False  # not a pytest test class

    ca_file: Path
    ca_key: Path
    cert_file: Path
    key_file: Path
    names: tuple[str, ...]


def _run(argv: Sequence[str], cwd: Path) -> None:
    res = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{res.stderr}")


def make_pki(directory: Path, names: Sequence[str] = ("127.0.0.1", "localhost")) -> TestPki:
    """Create ``ca.pem``/``ca.key`` and ``server.pem``/``server.key`` in ``directory``.

    ``names`` go into the server certificate's subjectAltName (IP addresses as IP entries,
    the rest as DNS entries); the first one is also the subject CN.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
         "-subj", "/O=softphone tests/CN=softphone test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        directory,
    )  # fmt: skip
    alt = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            alt.append(f"IP:{name}")
        except ValueError:
            alt.append(f"DNS:{name}")
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        f"subjectAltName={','.join(alt)}\n"
    )
    _run(
        [openssl, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", f"/O=softphone tests/CN={names[0]}"],
        directory,
    )  # fmt: skip
    _run(
        [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext"],
        directory,
    )  # fmt: skip
    for key in ("ca.key", "server.key"):
        (directory / key).chmod(0o600)
    return TestPki(
        ca_file=directory / "ca.pem",
        ca_key=directory / "ca.key",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
        names=tuple(names),
    )

"""``softphone nat-check [--stun HOST[:PORT]]``: RFC 5780 NAT behaviour discovery in plain words.

Runs :func:`ice.nat.discover_nat` against the STUN server given with the command's ``--stun``,
else the account's ``--stun`` (or config ``stun``), and prints what it found: whether there is
a NAT, its mapping (RFC 4787 §4.1) and filtering (RFC 4787 §5) behaviour, the public address,
and what that means for calls. ``--json`` gives ``{"nat": {...}}`` (the fields of
:meth:`ice.nat.NatBehavior.as_dict` plus ``advice``). Exit status 0 when the check completed
(the server answered the first Binding request), 1 when the server did not answer.
"""

from __future__ import annotations

import socket

from ice.nat import FilteringBehavior, MappingBehavior, NatBehavior, discover_nat
from softphone.config import Account, ConfigError, HostPort
from softphone.report import Reporter

__all__ = ["advice", "nat_lines", "run_nat_check"]

EXIT_OK, EXIT_FAILED = 0, 1
STUN_PORT = 3478  # RFC 8489 §18.9


def _addr(addr: tuple[str, int] | None) -> str:
    if addr is None:
        return "-"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advice(result: NatBehavior) -> str:
    """What the behaviour means for calls, in one sentence."""
    if result.nat is None:
        return "no STUN answer: UDP may be blocked; calls will need a TURN relay over TCP or TLS"
    if result.mapping in (
        MappingBehavior.ADDRESS_DEPENDENT,
        MappingBehavior.ADDRESS_AND_PORT_DEPENDENT,
    ):
        return (
            "symmetric NAT: direct calls to other NATed peers will need a TURN relay "
            "(configure --turn)"
        )
    if not result.nat:
        if result.filtering in (FilteringBehavior.ENDPOINT_INDEPENDENT, FilteringBehavior.UNKNOWN):
            return "no NAT: peers can reach this host directly; direct calls work"
        return "no NAT but a stateful firewall: direct calls work when both sides use ICE"
    if result.mapping is MappingBehavior.UNKNOWN:
        return "NAT of unknown type: configure a TURN relay to be safe"
    return "NAT with endpoint-independent mapping: direct calls work through ICE with STUN"


def nat_lines(result: NatBehavior) -> list[str]:
    """The human-readable report, one line per fact."""
    if result.nat is None:
        nat = "unknown (no answer)"
    else:
        nat = "yes" if result.nat else "no"
    lines = [
        f"STUN server:     {_addr(result.server)}"
        + ("" if result.rfc5780 else " (no RFC 5780 support: NAT type partly unknown)"),
        f"local address:   {_addr(result.local)}",
        f"public address:  {_addr(result.mapped)}",
        f"behind a NAT:    {nat}",
        f"mapping:         {result.mapping.value}",
        f"filtering:       {result.filtering.value}",
    ]
    if result.other_address is not None:
        lines.insert(1, f"other address:   {_addr(result.other_address)} (RFC 5780)")
    if result.error:
        lines.append(f"note:            {result.error}")
    lines.append(f"summary:         {result.summary}")
    lines.append(f"for calls:       {advice(result)}")
    return lines


def _stun_server(account: Account, option: str | None) -> HostPort:
    if option:
        return HostPort.parse(option, "--stun")
    if account.stun is not None:
        return account.stun
    raise ConfigError("nat-check needs a STUN server: give --stun HOST[:PORT]")


async def run_nat_check(
    account: Account,
    stun: str | None,
    reporter: Reporter,
    *,
    timeout: float = 3.0,
    filter_timeout: float = 1.5,
) -> int:
    """Run the command; returns the exit status (0: the check completed)."""
    server = _stun_server(account, stun)
    port = server.port or STUN_PORT
    section = reporter.section("nat")
    section["server"] = f"{server}" if server.port else f"{server}:{port}"
    reporter.progress(f"checking NAT behaviour with STUN server {section['server']} (RFC 5780)")
    bind = account.bind
    local = bind.host if bind is not None and bind.host not in ("0.0.0.0", "::") else None
    try:
        result = await discover_nat(
            (server.host, port), local=local, timeout=timeout, filter_timeout=filter_timeout
        )
    except (OSError, socket.gaierror) as exc:
        section.update(error=f"cannot reach {server}: {exc}", completed=False)
        reporter.progress(f"nat-check failed: cannot reach {server}: {exc}")
        return EXIT_FAILED
    section.clear()
    section.update(result.as_dict())
    section["advice"] = advice(result)
    section["completed"] = result.nat is not None
    for line in nat_lines(result):
        if reporter.json_output:  # stdout carries only the JSON report
            print(line, file=reporter.err, flush=True)
        else:
            print(line, file=reporter.out, flush=True)
    if result.nat is None:
        reporter.progress(
            f"nat-check failed: the STUN server {_addr(result.server)} did not answer"
        )
        return EXIT_FAILED
    return EXIT_OK

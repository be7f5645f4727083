"""The ``softphone`` command line: the contract of shared/DESIGN.md.

Scripts and interop tests depend on these commands, options, exit statuses and the ``--json``
report, so options are only ever added, never renamed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from softphone import __version__
from softphone.config import Account, ConfigError, apply_overrides, load_config
from softphone.register import run_register
from softphone.report import Reporter

log = logging.getLogger("softphone")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exactly as DESIGN.md lists the command line."""
    parser = argparse.ArgumentParser(
        prog="softphone",
        description="A SIP softphone whose audio crosses NATs with its own ICE stack.",
    )
    parser.add_argument("--version", action="version", version=f"softphone {__version__}")
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: XDG location)")
    parser.add_argument("--account", metavar="NAME", help="account from the config file")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--trace", action="store_true", help="SIP and STUN traces on stderr")
    parser.add_argument("--json", action="store_true", help="one JSON report on stdout at the end")

    acct = parser.add_argument_group("account overrides")
    acct.add_argument("--server", metavar="HOST[:PORT]", help="registrar and outbound proxy")
    acct.add_argument("--user", metavar="USER[@DOMAIN]", help="address of record")
    acct.add_argument("--auth-user", metavar="NAME", help="digest user name if not USER")
    acct.add_argument("--password-env", metavar="VAR", help="env variable with the password")
    acct.add_argument("--transport", choices=["udp", "tcp", "tls"], help="SIP transport")
    acct.add_argument("--bind", metavar="ADDR[:PORT]", help="SIP and media listening address")
    acct.add_argument("--stun", metavar="HOST[:PORT]", help="STUN server")
    acct.add_argument("--turn", metavar="HOST[:PORT]", help="TURN server")
    acct.add_argument("--turn-user", metavar="USER", help="TURN user name")
    acct.add_argument("--turn-password-env", metavar="VAR", help="env variable with TURN password")
    acct.add_argument("--codecs", metavar="LIST", help="codec order, e.g. opus,pcmu,pcma")
    acct.add_argument("--no-ice", action="store_true", help="offer plain RTP at the c=/m= address")
    acct.add_argument("--ca-file", metavar="PATH", help="trusted CAs (PEM) for TLS")

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    reg = sub.add_parser("register", help="stay registered")
    reg.add_argument("--once", action="store_true", help="register, report, unregister, exit")

    call = sub.add_parser("call", help="call a URI")
    call.add_argument("uri", metavar="URI")
    _media_options(call)
    call.add_argument("--dtmf", metavar="DIGITS", help="send these RFC 4733 digits once connected")

    answer = sub.add_parser("answer", help="answer incoming calls")
    answer.add_argument("--auto", action="store_true", help="answer at once instead of ringing")
    answer.add_argument("--count", type=int, metavar="N", help="stop after N calls")
    _media_options(answer)

    nat = sub.add_parser("nat-check", help="RFC 5780 NAT behaviour report")
    nat.add_argument("--stun", dest="nat_stun", metavar="HOST[:PORT]", help="STUN server")

    sub.add_parser("devices", help="list audio devices")
    sub.add_parser("demo", help="two local user agents call each other with ICE")
    sub.add_parser("tui", help="interactive full-screen phone")
    return parser


def _media_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--play", metavar="SRC", default="mic", help="mic | PATH.wav | tone:FREQ")
    p.add_argument("--record", metavar="SINK", default="speaker", help="speaker | PATH.wav | none")
    p.add_argument("--duration", type=float, metavar="S", help="hang up S seconds after the answer")


def setup_logging(verbose: int, trace: bool) -> None:
    """Log to stderr; ``--trace`` turns on the SIP and STUN wire traces."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if trace:
        for name in ("sip.trace", "ice.trace"):
            logging.getLogger(name).setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``softphone`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.trace)
    reporter = Reporter(json_output=args.json)
    try:
        account = load_account(args)
        if args.command == "register":
            status = asyncio.run(run_register(account, args.once, reporter))
        elif args.command in ("call", "answer"):
            from softphone.commands import run_answer, run_call

            runner = run_call if args.command == "call" else run_answer
            status = asyncio.run(runner(account, args, reporter))
        elif args.command == "nat-check":
            from softphone.natcheck import run_nat_check

            status = asyncio.run(run_nat_check(account, args.nat_stun, reporter))
        elif args.command == "devices":
            from softphone.devices import run_devices

            status = run_devices(reporter)
        elif args.command == "demo":
            from softphone.demo import run_demo

            status = asyncio.run(run_demo(account, args, reporter))
        elif args.command == "tui":
            from softphone.tui import run_tui

            status = run_tui(account, args, reporter)
        else:
            print(f"softphone: '{args.command}' is not available yet", file=sys.stderr)
            return EXIT_USAGE
    except ConfigError as exc:
        print(f"softphone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        status = EXIT_FAILED
    reporter.finish()
    return status


def load_account(args: argparse.Namespace) -> Account:
    """The account from the config file with the command-line overrides applied."""
    config = load_config(Path(args.config) if args.config else None)
    return apply_overrides(
        config.account(args.account),
        server=args.server,
        user=args.user,
        auth_user=args.auth_user,
        password_env=args.password_env,
        transport=args.transport,
        bind=args.bind,
        stun=args.stun,
        turn=args.turn,
        turn_user=args.turn_user,
        turn_password_env=args.turn_password_env,
        codecs=args.codecs,
        ice=False if args.no_ice else None,
        ca_file=args.ca_file,
    )


if __name__ == "__main__":
    sys.exit(main())

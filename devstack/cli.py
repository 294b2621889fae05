"""`ordermesh`: the operator's command for the local stack.

ordermesh up        start everything (idempotent) and print the URLs
ordermesh down      stop exactly what `up` started
ordermesh status    what runs, and whether the edge reports healthy
ordermesh logs      tail a component's log (`-f` to follow)
"""

from __future__ import annotations

import argparse
import os
import sys

from devstack import stack
from devstack.ports import Ports
from devstack.procs import NotReadyError


def _logs(name: str | None, follow: bool, lines: int) -> int:
    names = [name] if name else list(stack.COMPONENT_NAMES)
    files = [stack.log_file(n) for n in names if stack.log_file(n).exists()]
    if not files:
        print(f"no logs yet for {', '.join(names)}", file=sys.stderr)
        return 1
    argv = ["tail", "-n", str(lines), *(["-F"] if follow else []), *map(str, files)]
    os.execvp("tail", argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ordermesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the whole stack in the background")
    commands.add_parser("down", help="stop everything `up` started")
    commands.add_parser("status", help="show what is running")
    logs = commands.add_parser("logs", help="show component logs")
    logs.add_argument("name", nargs="?", choices=stack.COMPONENT_NAMES)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50)
    args = parser.parse_args(argv)
    ports = Ports.from_env()
    try:
        if args.command == "up":
            stack.up(ports)
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            for name, state in stack.status(ports):
                print(f"{name:<12} {state}")
        else:
            return _logs(args.name, args.follow, args.lines)
    except NotReadyError as error:
        print(f"ordermesh: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`ordermesh`: the operator's command for the local stack.

ordermesh up [--replicas W=N]   start everything (idempotent) and print the URLs; W=N runs
                                worker W as N replicas (also ORDERMESH_WORKER_REPLICAS)
ordermesh down                  stop exactly what `up` started, replicas included
ordermesh status                what runs, consumer-group lag and outbox backlog
ordermesh logs [name] [-f]      tail a component's log (`-f` to follow)
ordermesh dlq list [--limit N]  the pending dead letters, oldest first
ordermesh dlq replay (--all | --event-id ID ...)   move dead letters back to their topics
ordermesh dlq discard --event-id ID ...            drop dead letters that cannot succeed
ordermesh outbox list [--limit N]                  outbox rows the relay parked, oldest first
ordermesh outbox replay (--all | --event-id ID ...)   back to the outbox (with held rows)
ordermesh outbox discard (--all | --event-id ID ...)  drop them; held rows flow again
ordermesh prometheus check                         promtool: the generated config, the alert and
                                                   recording rules, and their tests
ordermesh users set-tier EMAIL TIER                free|standard|premium|enterprise
ordermesh users set-role EMAIL ROLE                user|admin|system; both take effect at the
                                                   account's next token (login or refresh)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from devstack import kafka, procs, prometheus, stack
from devstack.ports import Ports
from devstack.procs import NotReadyError
from services.common.identity import Role, Tier

DEFAULT_DLQ_LIMIT = 50


def _logs(name: str | None, follow: bool, lines: int) -> int:
    names = [name] if name else stack.log_names()
    files = [stack.log_file(n) for n in names if stack.log_file(n).exists()]
    if not files:
        print(f"no logs yet for {', '.join(names)}", file=sys.stderr)
        return 1
    argv = ["tail", "-n", str(lines), *(["-F"] if follow else []), *map(str, files)]
    os.execvp("tail", argv)


def _status(ports: Ports) -> None:
    rows = stack.status(ports)
    width = max(12, *(len(name) for name, _ in rows))
    for name, state in rows:
        print(f"{name:<{width}} {state}")
    print()
    print("\n".join(stack.metrics_lines(ports)))
    print()
    print("\n".join(stack.pipeline_lines()))
    print()
    print("\n".join(stack.rate_limit_lines()))
    print()
    print("\n".join(stack.webhook_lines()))


def _dlq(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from services.platform.messaging import dead_letters, inspect

    if not procs.is_running(kafka.NAME):
        print("ordermesh: kafka is not running (ordermesh up)", file=sys.stderr)
        return 1
    bootstrap = kafka.bootstrap()
    try:
        if args.dlq_command == "list":
            letters = dead_letters.list_dead_letters(bootstrap, args.limit + 1)
            for letter in letters[: args.limit]:
                print(inspect.dead_letter_line(letter))
            if len(letters) > args.limit:
                print(f"(more pending; show them with --limit {args.limit * 2})")
            elif not letters:
                print("no pending dead letters")
        elif args.dlq_command == "replay":
            ids = None if args.all else args.event_ids
            replayed = dead_letters.replay_dead_letters(bootstrap, event_ids=ids)
            print(f"replayed {replayed} dead letter(s) to their original topics")
        else:
            discarded = dead_letters.discard_dead_letters(bootstrap, args.event_ids)
            print(f"discarded {discarded} dead letter(s)")
    except (KafkaException, dead_letters.UnknownDeadLetterError, ValueError) as error:
        print(f"ordermesh: {error}", file=sys.stderr)
        return 1
    return 0


def _outbox(args: argparse.Namespace) -> int:
    import psycopg

    from devstack import postgres
    from services.platform.messaging import inspect, parked

    if not procs.is_running(postgres.NAME):
        print("ordermesh: postgres is not running (ordermesh up)", file=sys.stderr)
        return 1
    dsn, schemas = postgres.dsn(), inspect.registered_outbox_schemas()
    try:
        if args.outbox_command == "list":
            rows = parked.list_parked(dsn, schemas, args.limit + 1)
            for row in rows[: args.limit]:
                print(inspect.parked_line(row))
            if len(rows) > args.limit:
                print(f"(more parked; show them with --limit {args.limit * 2})")
            elif not rows:
                print("no parked outbox rows")
        elif args.outbox_command == "replay":
            moved = parked.replay_parked(dsn, schemas, None if args.all else args.event_ids)
            print(f"moved {moved} row(s) back to the outbox")
        else:
            dropped = parked.discard_parked(dsn, schemas, None if args.all else args.event_ids)
            print(f"discarded {dropped} parked row(s); rows held behind them flow again")
    except (psycopg.Error, parked.UnknownParkedRowError) as error:
        print(f"ordermesh: {error}", file=sys.stderr)
        return 1
    return 0


def _prometheus_check(ports: Ports) -> int:
    """promtool on the config `up` would generate now and on the rules in the repo."""
    with tempfile.TemporaryDirectory(prefix="ordermesh-prometheus-") as directory:
        config = stack.render_prometheus_config(ports, Path(directory) / "prometheus.yml")
        try:
            prometheus.check(config)
        except RuntimeError as error:
            print(f"ordermesh: {error}", file=sys.stderr)
            return 1
    return 0


def _users(args: argparse.Namespace, ports: Ports) -> int:
    import psycopg

    from devstack import postgres
    from services.auth.domain.commands import ChangeRole, ChangeTier
    from services.auth.manage_users import AccessCommand, change_access
    from services.common.errors import NotFound
    from services.platform.settings import Settings

    if not procs.is_running(postgres.NAME):
        print("ordermesh: postgres is not running (ordermesh up)", file=sys.stderr)
        return 1
    command: AccessCommand = (
        ChangeTier(args.email, Tier(args.tier))
        if args.users_command == "set-tier"
        else ChangeRole(args.email, Role(args.role))
    )
    try:
        change = asyncio.run(change_access(Settings.from_env(stack.app_env(ports)), command))
    except (NotFound, psycopg.Error) as error:
        print(f"ordermesh: {error}", file=sys.stderr)
        return 1
    unchanged = " (unchanged)" if change.before == change.after else ""
    print(f"{change.email}: {change.attribute} {change.before} -> {change.after}{unchanged}")
    if not unchanged:
        print("takes effect at the account's next token (login or refresh);")
        print("access tokens issued before keep the old value until they expire")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordermesh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the whole stack in the background")
    up.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="WORKER=N[,...]",
        help=f"run WORKER as N replicas in all (overrides {stack.REPLICAS_ENV})",
    )
    commands.add_parser("down", help="stop everything `up` started")
    commands.add_parser("status", help="show what runs, consumer lag and outbox backlog")
    top = commands.add_parser("top", help="a live dashboard from the processes' metrics")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one frame (two readings) and exit")
    logs = commands.add_parser("logs", help="show component logs")
    logs.add_argument("name", nargs="?", choices=stack.log_names())
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50)
    dlq = commands.add_parser("dlq", help="inspect and replay the dead-letter topic")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_commands.add_parser("list", help="show pending dead letters, oldest first")
    listing.add_argument("--limit", type=_positive, default=DEFAULT_DLQ_LIMIT)
    replay = dlq_commands.add_parser("replay", help="move dead letters back to their topics")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every pending dead letter")
    which.add_argument("--event-id", dest="event_ids", action="extend", nargs="+", metavar="ID")
    discard = dlq_commands.add_parser("discard", help="drop dead letters without replaying")
    discard.add_argument(
        "--event-id", dest="event_ids", action="extend", nargs="+", metavar="ID", required=True
    )
    outbox = commands.add_parser("outbox", help="inspect, replay or discard parked outbox rows")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    parked_list = outbox_commands.add_parser("list", help="show parked rows, oldest first")
    parked_list.add_argument("--limit", type=_positive, default=DEFAULT_DLQ_LIMIT)
    for name, text in (
        ("replay", "move parked rows (and the rows held behind them) back to the outbox"),
        ("discard", "drop parked rows; the rows held behind them flow again"),
    ):
        action = outbox_commands.add_parser(name, help=text)
        chosen = action.add_mutually_exclusive_group(required=True)
        chosen.add_argument("--all", action="store_true", help="every parked row")
        chosen.add_argument(
            "--event-id", dest="event_ids", action="extend", nargs="+", metavar="ID"
        )
    prometheus_command = commands.add_parser("prometheus", help="check the Prometheus setup")
    prometheus_commands = prometheus_command.add_subparsers(
        dest="prometheus_command", required=True
    )
    prometheus_commands.add_parser(
        "check", help="promtool check config/rules and test rules (installs prometheus)"
    )
    users = commands.add_parser("users", help="change an account's tier or role")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    set_tier = users_commands.add_parser("set-tier", help="move an account to another tier")
    set_tier.add_argument("email")
    set_tier.add_argument("tier", choices=[tier.value for tier in Tier])
    set_role = users_commands.add_parser("set-role", help="give an account another role")
    set_role.add_argument("email")
    set_role.add_argument("role", choices=[role.value for role in Role])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    ports = Ports.from_env()
    try:
        if args.command == "up":
            try:
                replicas = stack.requested_replicas(args.replicas)
            except stack.ReplicaSpecError as error:
                parser.error(str(error))
            stack.up(ports, replicas)
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            _status(ports)
        elif args.command == "top":
            from devstack import top

            top.run(lambda: stack.metrics_targets(ports), interval=args.interval, once=args.once)
        elif args.command == "dlq":
            return _dlq(args)
        elif args.command == "outbox":
            return _outbox(args)
        elif args.command == "prometheus":
            return _prometheus_check(ports)
        elif args.command == "users":
            return _users(args, ports)
        else:
            return _logs(args.name, args.follow, args.lines)
    except NotReadyError as error:
        print(f"ordermesh: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`ordermesh status | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

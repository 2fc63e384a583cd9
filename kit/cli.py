"""The `kit` command: one subcommand per job, each a thin shell over the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

from kit.errors import KitError

if TYPE_CHECKING:
    from kit.store import Ledger

TABLE_COLUMNS = {
    "runs": ["run_id", "run_key", "broker", "status", "started_at", "ended_at", "notebook", "error_name",
             "error"],
    "orders": ["client_order_id", "symbol", "side", "quantity", "order_type", "limit_price", "status",
               "filled_quantity", "avg_fill_price", "commission", "reason"],
    "fills": ["exec_id", "client_order_id", "symbol", "side", "quantity", "price", "commission",
              "currency", "time"],
}


def _print_table(frame: pd.DataFrame, columns: list[str]) -> None:
    if frame.empty:
        print("(none)")
        return
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
        print(frame.reindex(columns=[c for c in columns if c in frame.columns]).to_string(index=False))


def _ledger(args: argparse.Namespace) -> Ledger:
    from kit.store import Ledger

    return Ledger(args.db)


def cmd_table(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    if args.command == "runs":
        frame = ledger.runs()
        if args.status:
            frame = frame[frame["status"] == args.status]
        if args.date:
            frame = frame[frame["started_at"].dt.strftime("%Y-%m-%d") == args.date]
    else:
        run_id = ledger.resolve_run(args.run) if args.run else None
        frame = ledger.orders(run_id) if args.command == "orders" else ledger.fills(run_id)
        if args.command == "orders" and args.status:
            frame = frame[frame["status"] == args.status.upper()]
        if args.date:
            when = frame["created_at" if args.command == "orders" else "time"]
            frame = frame[when.dt.strftime("%Y-%m-%d") == args.date]
    _print_table(frame, TABLE_COLUMNS[args.command])
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from kit.engine import Run

    ledger = _ledger(args)
    run_id = ledger.resolve_run(args.run)
    row = ledger.query("SELECT run_key, status FROM runs WHERE run_id = ?", [run_id]).iloc[0]
    run = Run(run_id, row["run_key"], row["status"], ledger.orders(run_id), ledger.fills(run_id))
    print(run.summary())
    _print_table(run.orders, TABLE_COLUMNS["orders"])
    return 0


def cmd_tca(args: argparse.Namespace) -> int:
    """`kit tca`: which run first (without --run it is the latest, so say which), then its costs."""
    from kit.api import tca

    ledger = _ledger(args)
    run_id = ledger.resolve_run(args.run)
    row = ledger.query("SELECT run_key, broker, status, started_at FROM runs WHERE run_id = ?",
                       [run_id]).iloc[0]
    print(f"run {row['run_key']} ({run_id}) on {row['broker'] or 'no broker'}: {row['status']}, "
          f"started {str(row['started_at'])[:19]} UTC\n")
    print(tca(run_id, args.db))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from kit.api import cancel

    if not args.run and not args.all:
        raise KitError("say which: --run RUN or --all")
    runs = cancel(args.run, all_runs=args.all, db=args.db, timeout=args.timeout)
    for run in runs:
        print(run.summary())
    still = sum(int((r.orders["status"].isin(["NEW", "SUBMITTED", "PARTIAL"])
                     & r.orders["submitted_at"].notna()).sum()) for r in runs)
    if still:
        print(f"{still} order(s) still working: the broker has not confirmed their cancel", file=sys.stderr)
    return 1 if still else 0


def cmd_halt(args: argparse.Namespace) -> int:
    from kit.config import halt_file, halted

    path = halt_file()
    if args.clear:
        path.unlink(missing_ok=True)
        print(f"halt switch cleared ({path} removed)" if not halted() else f"still halted: {halted()}")
        return 0 if not halted() else 1
    if args.status:
        print(halted() or "not halted")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(args.reason) + "\n")
    print(f"halted: no new order is sent until `kit halt --clear` ({path})")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from kit.schedule import main as schedule_main

    if args.db:
        os.environ["KIT_DB"] = args.db  # the notebooks it runs write to the same ledger
    return schedule_main(args.rest)


def cmd_gateway(args: argparse.Namespace) -> int:
    """`kit gateway [options]` serves until interrupted; `kit gateway [options] -- CMD ...` serves while CMD
    runs (with KIT_IB_HOST/KIT_IB_PORT pointing at it) and exits with CMD's status: how `make demo-ib` and
    scripts get a gateway that is stopped however the command ends."""
    from kit.gateway.__main__ import build_config, parse_args
    from kit.gateway.__main__ import main as gateway_main

    if "--" not in args.rest:
        return gateway_main(args.rest)
    split = args.rest.index("--")
    options, command = parse_args(args.rest[:split]), args.rest[split + 1:]
    if not command:
        raise KitError("nothing to run after --")
    import subprocess

    from kit.gateway import run_gateway_in_thread

    with run_gateway_in_thread(build_config(options), options.host, options.port) as gateway:
        print(f"kit gateway listening on {gateway.host}:{gateway.port}", file=sys.stderr)
        env = {**os.environ, "KIT_IB_HOST": gateway.host, "KIT_IB_PORT": str(gateway.port)}
        return subprocess.run(command, env=env).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit", description="research targets -> orders -> ledger")
    parser.add_argument("--db", help="ledger file (default: KIT_DB or data/kit.duckdb)")
    commands = parser.add_subparsers(dest="command", required=True)

    Handler = Callable[[argparse.Namespace], int]

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    runs = add("runs", cmd_table, "runs recorded in the ledger")
    runs.add_argument("--status", help="only runs with this status (done, partial, failed, planned, skipped, "
                                       "running)")
    runs.add_argument("--date", help="only runs started on this UTC date (YYYY-MM-DD)")
    for name in ("orders", "fills"):
        sub = add(name, cmd_table, f"{name} recorded in the ledger")
        sub.add_argument("--run", help="run id or run key")
        sub.add_argument("--date", help="only those of this UTC date (YYYY-MM-DD)")
        if name == "orders":
            sub.add_argument("--status", help="only orders with this status")
    summary = add("summary", cmd_summary, "one run's status, orders and fills")
    summary.add_argument("--run", help="run id or run key (default: the latest run)")
    costs = add("tca", cmd_tca, "transaction costs of a run: slippage, shortfall, commissions, latency")
    costs.add_argument("--run", help="run id or run key (default: the latest run)")
    kill = add("cancel", cmd_cancel, "kill switch: cancel working orders and wait for the broker's word")
    kill.add_argument("--run", help="run id or run key")
    kill.add_argument("--all", action="store_true", help="every run with working orders")
    kill.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for confirmations")
    halt = add("halt", cmd_halt, "stop every new submission until cleared (a file, so it survives restarts)")
    halt.add_argument("reason", nargs="*", help="why, recorded in the halt file")
    halt.add_argument("--clear", action="store_true", help="allow submissions again")
    halt.add_argument("--status", action="store_true", help="say whether submissions are halted")
    from kit import reconcile, runner

    runner.register(commands)
    reconcile.register(commands)
    add("schedule", cmd_schedule, "run notebooks on market time: kit schedule FILE [--once] [--state PATH]")
    add("gateway", cmd_gateway, "the simulated IB gateway: kit gateway [--port N] [--seed N] [-- CMD ...]")
    return parser


PASS_THROUGH = ("gateway", "schedule")


def _command_index(argv: list[str]) -> int | None:
    """Where the subcommand stands, past the top-level options (--db takes a value)."""
    at = 0
    while at < len(argv):
        if argv[at] == "--db":
            at += 2
        elif argv[at].startswith("-"):
            at += 1
        else:
            return at
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    at = _command_index(argv)
    if at is not None and argv[at] in PASS_THROUGH:  # these parse their own options
        args = parser.parse_args(argv[:at + 1])
        args.rest = argv[at + 1:]
    else:
        args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KitError as exc:
        print(f"kit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

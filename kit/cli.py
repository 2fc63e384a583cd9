"""The `kit` command: every option parser of kit lives here, each subcommand a thin shell over a library call.

Parsing needs nothing heavy, so `kit --help`, a typo and shell completion answer at once; pandas, DuckDB,
papermill and the brokers load only in the command that uses them. A user error (bad input, a refused
request) prints `kit: <message>` and exits 2 without a traceback; `--debug` or KIT_DEBUG=1 shows it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kit.errors import KitError, UsageError
from kit.ids import RESERVED
from kit.model import OPEN_STATUSES, RunStatus, Status
from kit.runner import BROKERS

if TYPE_CHECKING:
    import pandas as pd

    from kit.runner import NotebookRun
    from kit.slots import Job
    from kit.store import Ledger
    from kit.tables import Column, Format

# Rows a terminal table shows unless --limit says otherwise; --json and --csv give every row by default.
TABLE_LIMIT = 50
# Where each table's "newest first" and --date look.
TIME_COLUMN = {"runs": "started_at", "orders": "created_at", "fills": "time"}
# The commands that parse their own options (the gateway's argparse is kit.gateway's).
PASS_THROUGH = ("gateway",)
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files"}  # shtab's file completion, without importing it


class Parser(argparse.ArgumentParser):
    """argparse, but its errors go through main's `kit: <message>`, exit 2, like every other user error:
    the message alone (it names the option and what is valid), without argparse's usage block. Every
    parser of kit's commands is one (kit gateway's too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ---- tables ----------------------------------------------------------------------------------------------
def _columns(name: str) -> list[Column]:
    from kit.tables import Column, path, price, quantity, timestamp

    return {
        "runs": [
            Column("run_key", "run key"), Column("status", "status"), Column("broker", "broker", drop=2),
            Column("started_at", "started (UTC)", timestamp),
            Column("ended_at", "ended (UTC)", timestamp, drop=3),
            Column("notebook", "notebook", path, wrap=True, drop=4), Column("error_name", "error"),
            Column("error", "message", wrap=True), Column("run_id", "run id", drop=5),
        ],
        "orders": [
            # The order id holds the symbol and the side, so those two columns go first when space is short.
            Column("client_order_id", "order"), Column("symbol", "symbol", drop=7),
            Column("side", "side", drop=6), Column("quantity", "qty", quantity, numeric=True),
            Column("order_type", "type", drop=3), Column("limit_price", "limit", price, numeric=True, drop=2),
            Column("status", "status"), Column("filled_quantity", "filled", quantity, numeric=True),
            Column("avg_fill_price", "avg price", price, numeric=True),
            Column("commission", "commission", price, numeric=True, drop=4),
            Column("created_at", "created (UTC)", timestamp, drop=5), Column("reason", "reason", wrap=True),
        ],
        "fills": [
            Column("time", "time (UTC)", timestamp), Column("client_order_id", "order"),
            Column("symbol", "symbol", drop=7), Column("side", "side", drop=6),
            Column("quantity", "qty", quantity, numeric=True), Column("price", "price", price, numeric=True),
            Column("commission", "commission", price, numeric=True, drop=4),
            Column("currency", "ccy", drop=2), Column("exec_id", "exec id", drop=5),
        ],
    }[name]


def _ledger(args: argparse.Namespace) -> Ledger:
    from kit.store import Ledger

    return Ledger(args.db)


def _run_row(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """The run's row, read without holding the file (Ledger.run_row is the writer's: it keeps it open)."""
    return ledger.query("SELECT * FROM runs WHERE run_id = ?", [run_id]).iloc[0].to_dict()


def _form(args: argparse.Namespace) -> Format:
    return "json" if args.json else "csv" if args.csv else "table"


def _show(frame: pd.DataFrame, table: str, args: argparse.Namespace) -> None:
    """Newest first, --limit rows (a terminal table: TABLE_LIMIT unless told), in the chosen form."""
    from kit.tables import render

    frame = frame.sort_values(TIME_COLUMN[table], ascending=False, kind="stable", na_position="first")
    form = _form(args)
    limit = args.limit if args.limit is not None else (TABLE_LIMIT if form == "table" else 0)
    shown = frame.head(limit) if limit else frame
    render(shown, _columns(table), form)
    if form == "table" and len(shown) < len(frame):
        print(f"({len(shown)} newest of {len(frame)}; --limit N for more, 0 for all)")


def cmd_table(args: argparse.Namespace) -> int:
    """`kit runs`, `kit orders`, `kit fills`."""
    ledger = _ledger(args)
    if args.command == "runs":
        frame = ledger.runs()
    else:
        run_id = ledger.resolve_run(args.run) if args.run else None
        frame = ledger.orders(run_id) if args.command == "orders" else ledger.fills(run_id)
    if getattr(args, "status", None):
        frame = frame[frame["status"] == args.status]
    if args.date:
        frame = frame[frame[TIME_COLUMN[args.command]].dt.date == args.date]
    _show(frame, args.command, args)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from kit.engine import Run
    from kit.tables import render

    ledger = _ledger(args)
    run_id = ledger.resolve_run(args.run)
    row = _run_row(ledger, run_id)
    run = Run(run_id, row["run_key"], row["status"], ledger.orders(run_id), ledger.fills(run_id),
              _notes(ledger, run_id))
    print(run.summary())
    if row.get("error_name"):
        print(f"  error: {row['error_name']}: {row['error']}")
    render(run.orders, _columns("orders"))
    return 0


def _notes(ledger: Ledger, run_id: str) -> list[str]:
    """The notes of the run's last attempt (a disconnect, an unconfirmed cancel, ...), as its end recorded."""
    import json

    frame = ledger.query("SELECT detail FROM order_events WHERE run_id = ? AND kind = 'run_finished' "
                         'ORDER BY "at" DESC, seq DESC LIMIT 1', [run_id])
    return [] if frame.empty else list(json.loads(frame.iloc[0, 0]).get("notes", []))


def cmd_tca(args: argparse.Namespace) -> int:
    """`kit tca`: which run first (without --run it is the latest, so say which), then its costs."""
    from kit.api import tca
    from kit.tables import timestamp

    ledger = _ledger(args)
    run_id = ledger.resolve_run(args.run)
    row = _run_row(ledger, run_id)
    print(f"run {row['run_key']} ({run_id}) on {row['broker'] or 'no broker'}: {row['status']}, "
          f"started {timestamp(row['started_at'])} UTC\n")
    print(tca(run_id, args.db))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """`kit cancel`: says which orders it cancelled, which filled first, which are still working, or that
    nothing was working (then no broker is contacted)."""
    from kit.api import cancel
    from kit.tables import quantity

    if not args.run and not args.all:
        raise KitError("say which: --run RUN or --all")
    ledger = _ledger(args)
    run_ids = ledger.working_runs() if args.all else [ledger.resolve_run(args.run)]
    try:
        working = {o.client_order_id: o for r in run_ids for o in ledger.load_orders(r)
                   if o.working and o.submitted_at is not None}
    finally:
        ledger.close()  # load_orders reads through the writer's connection: let go before cancel opens it
    if not working:
        print("nothing was working: " + (f"run {args.run} has no order at the broker" if args.run
                                         else "no run has an order at the broker"))
        return 0
    print(f"cancelling {len(working)} working order(s) in {len(run_ids)} run(s)...")
    runs = cancel(args.run, all_runs=args.all, db=args.db, timeout=args.timeout)
    after = {row.client_order_id: row for r in runs for row in r.orders.itertuples(index=False)}
    still = 0
    for coid in working:
        now = after.get(coid)
        filled = f"{quantity(now.filled_quantity)}/{quantity(now.quantity)} filled" if now is not None else ""
        if now is None or now.status in OPEN_STATUSES:
            still += 1
            print(f"  still working  {coid}  {filled}: the broker has not confirmed the cancel")
        elif now.status == Status.CANCELLED:
            print(f"  cancelled      {coid}  {filled}")
        else:
            print(f"  {now.status.lower():<14} {coid}  {filled} (before the cancel took effect)")
    for run in runs:
        for note in run.notes:
            print(f"  note: {note}")
    if still:
        print(f"kit: {still} order(s) still working: the broker has not confirmed their cancel",
              file=sys.stderr)
    return 1 if still else 0


def cmd_amend(args: argparse.Namespace) -> int:
    """`kit amend RUN ORDER --limit X`: exit 0 when the broker accepted, 1 when it refused or did not
    answer (the order then works on as the ledger shows it)."""
    from kit.api import amend

    broker = args.broker
    if broker is None:
        ledger = _ledger(args)
        try:
            broker = _run_row(ledger, ledger.resolve_run(args.run))["broker"] or "mock"
        finally:
            ledger.close()
    if broker == "mock":
        raise KitError("the mock broker lives in the process that ran the order: amend it with kit.amend "
                       "there (a new process's mock has no orders)")
    done = amend(args.run, args.order, limit=args.limit, stop=args.stop, quantity=args.quantity, tif=args.tif,
                 trail_amount=args.trail_amount, trail_percent=args.trail_percent, offset=args.offset,
                 broker=broker, db=args.db, timeout=args.timeout)
    print(done)
    row = done.order
    print(f"  now: {row['status']}, quantity {row['quantity']:g}, limit {row['limit_price']}; "
          f"amendments accepted: {row['amendments']}")
    if not done.accepted:
        print(f"kit: amendment {done.outcome}: {done.reason}", file=sys.stderr)
    return 0 if done.accepted else 1


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


# ---- notebooks -------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """`kit run`: exit status 0 when the run is done, partial, planned or skipped, 1 when it failed.

    Parameters are checked against the notebook's parameters cell before a kernel starts.
    """
    from kit.errors import Interrupted
    from kit.runner import NotebookRun, execute_notebook, spare_needless_imports, typed_parameters

    spare_needless_imports()

    if args.broker is not None:
        given = dict(args.parameters).get("broker", args.broker)
        if given != args.broker:
            raise KitError(f"--broker {args.broker} and -p broker {given} disagree")
        args.parameters.append(["broker", args.broker])
    parameters = typed_parameters(args.notebook, args.parameters)
    try:
        result = execute_notebook(args.notebook, parameters, run_key=args.run_key, db=args.db,
                                  execution_timeout=args.execution_timeout, dry_run=args.dry_run)
    except Interrupted as stopped:  # Ctrl-C or SIGTERM, passed to the kernel: what it did, then 128 + signal
        if not isinstance(stopped.run, NotebookRun):
            raise
        _print_result(stopped.run, args.db)
        why = f": {stopped.run.error}" if stopped.run.error else " (every cell had run)"
        print(f"kit: interrupted by {stopped.run.interrupted}: run {stopped.run.run_key} ended "
              f"{stopped.run.status}{why}", file=sys.stderr)
        return 128 + signal.Signals[stopped.run.interrupted]
    _print_result(result, args.db)
    return 0 if result.ok else 1


def _print_result(result: NotebookRun, db: str | None) -> None:
    from kit.engine import Run
    from kit.store import Ledger

    ledger = Ledger(db)
    print(Run(result.run_id, result.run_key, result.status, ledger.orders(result.run_id),
              ledger.fills(result.run_id), _notes(ledger, result.run_id)).summary())
    if result.error_name:
        label = "reason" if result.status == RunStatus.SKIPPED else "error"
        where = f" in cell {result.cell}" if result.cell is not None else ""
        print(f"  {label}{where}: {result.error_name}: {result.error}")
        if result.traceback:
            print("  last lines of its traceback:")
            print("\n".join(f"    {line}" for line in result.traceback))
        if result.kernel_said:
            print(f"  last lines of the kernel's own stderr ({result.kernel_log}):")
            print("\n".join(f"    {line}" for line in result.kernel_said))
    if result.output_path:
        print(f"  output notebook: {result.output_path}")


def cmd_params(args: argparse.Namespace) -> int:
    """`kit params`: the parameters cell, one line per parameter, as it reads in the notebook."""
    from kit.runner import notebook_parameters

    declared = notebook_parameters(args.notebook)
    if not declared:
        print(f"{args.notebook} has no parameters cell (a code cell tagged 'parameters')")
        return 0

    def declaration(parameter: dict[str, str]) -> str:
        typed = "" if parameter["inferred_type_name"] == "None" else f": {parameter['inferred_type_name']}"
        return f"{parameter['name']}{typed} = {parameter['default']}"

    width = max(len(declaration(p)) for p in declared.values())
    for name, parameter in declared.items():
        notes = [parameter["help"]] if parameter["help"] else []
        if name in RESERVED:
            notes.append(f"[kit run sets this: {RESERVED[name]}]")
        print(f"{declaration(parameter):<{width}}  # {' '.join(notes)}".rstrip(" #"))
    return 0


# ---- schedule, reconcile, gateway ------------------------------------------------------------------------
def cmd_schedule(args: argparse.Namespace) -> int:
    """`kit schedule`: its jobs and their next slots first, then one line per run as each one ends."""
    import logging

    from kit.clock import now_utc
    from kit.runner import spare_needless_imports
    from kit.schedule import StateFile, check_notebooks, load_jobs, run_forever, run_notebook, run_once

    spare_needless_imports()

    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.db:
        os.environ["KIT_DB"] = args.db  # the notebooks it runs write to the same ledger
    jobs = load_jobs(args.file)
    if args.pools:  # for `airflow pools import`: one slot per IB account and clientId (kit.airflow)
        import json

        from kit.schedule import pools

        print(json.dumps(pools(jobs), indent=2))
        return 0
    check_notebooks(jobs)
    state = StateFile(args.state)
    _print_jobs(jobs, state, now_utc())

    def runner(job: Job, slot: datetime, key: str) -> Any:
        print(f"{_stamp()}  start   {job.name}  {key}  ({job.notebook})", flush=True)
        return run_notebook(job, slot, key)

    def report(outcome: Any) -> None:
        status = outcome.run_status or outcome.status
        detail = f"  {outcome.error}" if outcome.error else ""
        print(f"{_stamp()}  {status:<7} {outcome.job}  {outcome.run_key}{detail}", flush=True)

    try:
        if args.once:
            outcomes = run_once(jobs, now_utc(), state, runner, args.lock_dir, report)
            if not outcomes:
                print(f"{_stamp()}  nothing due")
            return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0
        print(f"{_stamp()}  waiting for the next slot (Ctrl-C stops)", flush=True)
        run_forever(jobs, runner, state=state, lock_dir=args.lock_dir, report=report)
    except KeyboardInterrupt:
        print(f"{_stamp()}  stopped", file=sys.stderr)
        return 130
    return 0


def _stamp() -> str:
    from kit.clock import utcnow

    return f"{utcnow():%Y-%m-%d %H:%M:%S} UTC"


def _print_jobs(jobs: Sequence[Job], state: Any, now: datetime) -> None:
    from zoneinfo import ZoneInfo

    import pandas as pd

    from kit.slots import next_slot
    from kit.tables import Column, path, render, timestamp

    rows = []
    for job in jobs:
        upcoming = next_slot(job, now)
        last = state.last(job.name)
        where = ZoneInfo(job.timezone) if job.timezone else None
        if job.at:
            when = f"{job.at} on {job.calendar}"
        else:
            when = f"{job.cron} {job.timezone}" + (f" on {job.calendar} sessions" if job.calendar else "")
        local = "" if upcoming is None or where is None else f" ({upcoming.astimezone(where):%H:%M %Z})"
        rows.append({"job": job.name, "when": when, "missed": job.missed,
                     "next": "never" if upcoming is None else f"{upcoming:%Y-%m-%d %H:%M} UTC{local}",
                     "last": timestamp(last.replace(tzinfo=None)) if last else "", "notebook": job.notebook})
    columns = [Column("job", "job"), Column("when", "when", wrap=True), Column("next", "next slot"),
               Column("missed", "missed", drop=2), Column("last", "last run (UTC)", drop=3),
               Column("notebook", "notebook", path, drop=4)]
    render(pd.DataFrame(rows), columns, title=f"{len(jobs)} job(s)",
           hidden_note="a wider terminal shows them")


def cmd_reconcile(args: argparse.Namespace) -> int:
    """`kit reconcile`: the breaks table; exit 1 while there is any, so a script notices."""
    from kit.reconcile import reconcile

    result = reconcile(args.run, broker=args.broker, db=args.db, adopt=args.adopt)
    print(result)
    return 1 if len(result.breaks) else 0


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


def cmd_completion(args: argparse.Namespace) -> int:
    """`kit completion bash|zsh`: the completion script, generated from this parser by shtab."""
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


# ---- the parser ------------------------------------------------------------------------------------------
def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2026-12-01") from None


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds: use a positive number")
    return seconds


def _whole_seconds(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds: use 1 or more")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: use 0 (all) or a positive number")
    return int(text)


def _files(action: argparse.Action) -> None:
    """Complete this argument with file names (shtab reads the attribute when it generates a script)."""
    action.complete = FILE  # type: ignore[attr-defined]


def _global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """--db and --debug, accepted before or after the subcommand. A subcommand's copy has no default, so it
    never overwrites what was given before the subcommand."""
    unset = argparse.SUPPRESS if in_subcommand else None
    _files(parser.add_argument("--db", default=unset, metavar="LEDGER",
                               help="the ledger (default: KIT_DB or data/kit.duckdb)"))
    parser.add_argument("--debug", action="store_true", default=unset if in_subcommand else False,
                        help="show tracebacks and debug logs (or KIT_DEBUG=1)")


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_count, metavar="N",
                        help=f"the N newest rows (default: {TABLE_LIMIT} in a table, all with --json/--csv; "
                             "0: all)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="a JSON array of rows, for scripts")
    form.add_argument("--csv", action="store_true", help="CSV with a header row, for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kit", description="research targets -> orders -> ledger")
    _global_options(parser, in_subcommand=False)
    common = Parser(add_help=False)
    _global_options(common, in_subcommand=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    Handler = Callable[[argparse.Namespace], int]

    def add(name: str, handler: Handler, help_text: str, **options: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=options.pop("description", help_text),
                                  parents=[common], **options)
        sub.set_defaults(handler=handler)
        return sub

    run_statuses = [s.value for s in RunStatus]
    order_statuses = [s.value for s in Status]
    runs = add("runs", cmd_table, "runs recorded in the ledger, newest first")
    runs.add_argument("--status", type=str.lower, choices=run_statuses, help="only runs with this status")
    runs.add_argument("--date", type=_date, help="only runs started on this UTC date (YYYY-MM-DD)")
    _output_options(runs)
    for name in ("orders", "fills"):
        sub = add(name, cmd_table, f"{name} recorded in the ledger, newest first")
        sub.add_argument("--run", help="run id or run key (default: every run)")
        if name == "orders":
            sub.add_argument("--status", type=str.upper, choices=order_statuses,
                             help="only orders with this status (any case)")
        sub.add_argument("--date", type=_date, help="only those of this UTC date (YYYY-MM-DD)")
        _output_options(sub)
    summary = add("summary", cmd_summary, "one run's status, orders and fills")
    summary.add_argument("--run", help="run id or run key (default: the latest run)")
    costs = add("tca", cmd_tca, "transaction costs of a run: slippage, shortfall, commissions, latency")
    costs.add_argument("--run", help="run id or run key (default: the latest run)")
    kill = add("cancel", cmd_cancel, "kill switch: cancel working orders and wait for the broker's word")
    kill.add_argument("--run", help="run id or run key")
    kill.add_argument("--all", action="store_true", help="every run with working orders")
    kill.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for confirmations")
    change = add("amend", cmd_amend, "change a working order's price, quantity, tif or trail at the broker")
    change.add_argument("run", help="run id or run key")
    change.add_argument("order", help="client_order_id, or the symbol of the run's only order in it")
    change.add_argument("--limit", type=float, help="the new limit price")
    change.add_argument("--stop", type=float, help="the new stop price")
    change.add_argument("--quantity", type=float, help="the new total quantity (above what has filled)")
    change.add_argument("--tif", help="the new time in force: DAY, GTC or IOC")
    change.add_argument("--trail-amount", type=float, help="a trailing stop's new trailing amount")
    change.add_argument("--trail-percent", type=float, help="a trailing stop's new trailing percent")
    change.add_argument("--offset", type=float, help="a TRAIL LIMIT's limit offset or a REL's peg offset")
    change.add_argument("--broker", choices=BROKERS, help="default: the run's broker")
    change.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to wait for the answer")
    halt = add("halt", cmd_halt, "stop every new submission until cleared (a file, so it survives restarts)")
    halt.add_argument("reason", nargs="*", help="why, recorded in the halt file")
    halt.add_argument("--clear", action="store_true", help="allow submissions again")
    halt.add_argument("--status", action="store_true", help="say whether submissions are halted")

    run = add("run", cmd_run, "run a notebook with papermill and record it in the ledger",
              description="Run NOTEBOOK with papermill; the output notebook goes under "
                          "data/runs/<UTC date>/. The run key defaults to <notebook name>-<UTC date>, so a "
                          "retry resumes the run.")
    _files(run.add_argument("notebook", type=Path))
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], dest="parameters",
                     metavar=("NAME", "VALUE"), help="a notebook parameter, checked against its parameters "
                                                     "cell")
    run.add_argument("--run-key", help="the run's key (default: <notebook name>-<UTC date>)")
    run.add_argument("--execution-timeout", type=_whole_seconds, metavar="S",
                     help="seconds each cell may take")
    run.add_argument("--dry-run", action="store_true", help="plan without sending (KIT_DRY_RUN=1)")
    run.add_argument("--broker", choices=BROKERS, help="sets the notebook's broker parameter")
    params = add("params", cmd_params, "a notebook's parameters, defaults and comments")
    _files(params.add_argument("notebook", type=Path))

    schedule = add("schedule", cmd_schedule, "run notebooks on market time (see docs/scheduling.md)")
    _files(schedule.add_argument("file", type=Path, help="TOML job file of [[job]] tables"))
    schedule.add_argument("--once", action="store_true", help="run what is due now and exit (for cron)")
    schedule.add_argument("--pools", action="store_true",
                          help="print the Airflow pools the jobs need, as JSON for `airflow pools import`")
    schedule.add_argument("--state", type=Path, help="last slot run per job (default: data/schedule.json)")
    schedule.add_argument("--lock-dir", type=Path, help="per-job lock files (default: data/locks)")

    check = add("reconcile", cmd_reconcile, "broker versus ledger: a breaks table (exit 1 while any)")
    check.add_argument("--run", help="run id or run key (default: every run with orders sent today)")
    check.add_argument("--broker", choices=BROKERS, help="default: the run's broker")
    check.add_argument("--adopt", action="store_true", help="take the broker's truth; audit every change")

    ledger = add("ledger", cmd_ledger_copy, "move a ledger: kit ledger copy SRC DST")
    ledger_actions = ledger.add_subparsers(dest="action", required=True, metavar="ACTION")
    copy = ledger_actions.add_parser(
        "copy", parents=[common], help="copy every run, order, fill and event to another ledger",
        description="Copy a ledger (a DuckDB file or a postgresql:// URL) into an empty one, either way, in "
                    "one transaction; prints each table's row count and checksum on both sides.")
    copy.add_argument("source", metavar="SRC", help="the ledger to copy from")
    copy.add_argument("destination", metavar="DST", help="the ledger to copy into (created if new)")
    copy.add_argument("--merge", action="store_true",
                      help="copy into a ledger that holds rows already (rows with the same key are replaced)")
    copy.set_defaults(handler=cmd_ledger_copy)

    add("gateway", cmd_gateway, "the simulated IB gateway: kit gateway [--port N] [--seed N] [-- CMD ...]",
        add_help=False)
    completion = add("completion", cmd_completion, "print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=("bash", "zsh"))
    return parser


def cmd_ledger_copy(args: argparse.Namespace) -> int:
    """`kit ledger copy SRC DST`: per table, rows and checksum of the source and of the copy; exit 1 if any
    differs."""
    from kit.ledger_copy import copy_ledger

    report = copy_ledger(args.source, args.destination, merge=args.merge)
    print(f"{'table':<13} {'source rows':>11}  {'source checksum':<16}  {'copied rows':>11}  "
          f"{'copied checksum':<16}")
    for line in report:
        print(f"{line.table:<13} {line.source_rows:>11}  {line.source_checksum:<16}  {line.copied_rows:>11}  "
              f"{line.copied_checksum:<16}{'' if line.same else '  DIFFERS'}")
    if all(line.same for line in report):
        return 0
    print("kit: the copy differs from its source (see DIFFERS above)", file=sys.stderr)
    return 1


def _command_index(argv: Sequence[str]) -> int | None:
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


def _debugging(argv: Sequence[str]) -> bool:
    """--debug, or KIT_DEBUG (read like every setting, so only when needed: after parsing, or for an error).
    A configuration kit cannot read is not debug mode: its own error then says what is wrong."""
    if "--debug" in argv:
        return True
    from kit.config import setting

    try:
        return bool(setting("KIT_DEBUG"))
    except KitError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        at = _command_index(argv)
        if at is not None and argv[at] in PASS_THROUGH:  # these parse their own options
            args = parser.parse_args(argv[:at + 1])
            args.rest = argv[at + 1:]
        else:
            args = parser.parse_args(argv)
        args.debug = _debugging(argv)
        return args.handler(args)
    except KitError as exc:
        if _debugging(argv):
            traceback.print_exc()
        print(f"kit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _debugging(argv):
            traceback.print_exc()
        return 130
    except BrokenPipeError:  # `kit runs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

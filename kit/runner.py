"""`kit run` and `kit params`: run a parameterized notebook headlessly with papermill, as one ledger run.

The runner writes the run's row before the kernel starts and finishes it after the kernel is gone, so a
notebook that fails, times out or kills its kernel is still on record, and papermill's own output notebook
is archived beside it. It passes a deterministic run_key (notebook name + UTC date unless told otherwise),
so running a job again resumes its run instead of sending its orders twice.

Notebooks import this module for `Skip`, so papermill and the ledger (seconds of imports) load only when a
run starts.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.config import db_path
from kit.errors import KitError, RunFailed
from kit.ids import check_run_key, run_id_for

if TYPE_CHECKING:
    from kit.schedule import Job
    from kit.store import Ledger

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = Path("data/runs")
# Parameters the runner sets itself, and the option that sets each; `-p` may not set them.
RESERVED = {"run_key": "--run-key", "db": "--db", "dry_run": "--dry-run"}


class Skip(Exception):
    """Raise it in a notebook to end the run early and cleanly: recorded as `skipped`, exit status 0.

    Raise Skip itself, not a subclass: papermill reports a notebook's exception by class name only.
    """



@dataclass(frozen=True)
class NotebookRun:
    """How a notebook run ended, as its run row records it."""

    run_id: str
    run_key: str
    status: str  # done | partial | failed | skipped | planned (a dry run)
    output_path: Path | None
    error_name: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def parse_value(text: str) -> Any:
    """A `-p` value typed the way papermill's own `-p` types it: True/False/None, int, float, else str."""
    from papermill.cli import _resolve_type  # private, but it is exactly papermill's rule (pinned 2.7)

    return _resolve_type(text)


def notebook_parameters(notebook: str | Path) -> dict[str, dict[str, str]]:
    """The parameters cell as papermill reads it: name -> {name, inferred_type_name, default, help}.

    `kit run` checks `-p` names against it, and `kit params` prints it.
    """
    import papermill

    return papermill.inspect_notebook(str(_existing(notebook)))


def default_run_key(notebook: str | Path, when: datetime, dry_run: bool = False) -> str:
    """`<notebook stem>-<UTC date>`: a retry the same day resumes the run instead of sending again.

    A dry run gets its own key, so the orders it plans can never become the real run's orders.
    """
    return f"{Path(notebook).stem}-{when:%Y-%m-%d}" + ("-dry" if dry_run else "")


def execute_notebook(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    run_key: str | None = None,
    db: str | Path | None = None,
    execution_timeout: int | None = None,
    dry_run: bool = False,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
) -> NotebookRun:
    """Run `notebook` with papermill as the run `run_key` and record it in the ledger; never raises for a
    failing notebook (the result and the run row say what happened), only for a request kit refuses.

    `execution_timeout` limits each cell, in seconds. `dry_run` sets KIT_DRY_RUN=1 in the kernel and the
    notebook's `dry_run` parameter if it has one.
    """
    import papermill

    path = _existing(notebook).resolve()
    started = _utcnow()
    run_key = check_run_key(run_key or default_run_key(path, started, dry_run))
    run_id = run_id_for(run_key)
    ledger_path = db_path(db).resolve()
    declared = notebook_parameters(path)
    injected = _kernel_parameters(declared, parameters or {}, run_key, ledger_path, dry_run)
    if "run_key" not in declared:
        log.warning("%s has no run_key parameter: its orders are not tied to run %s, and a retry may send "
                    "them again", path.name, run_key)
    recorded = injected | ({"dry_run": True} if dry_run else {})  # a dry run shows, even without a parameter
    output = (Path(runs_dir) / f"{started:%Y-%m-%d}" / f"{path.stem}-{run_id}.ipynb").resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    broker = injected.get("broker", _literal(declared.get("broker", {}).get("default")))
    _begin(ledger_path, run_id, run_key, started, {
        "notebook": str(path), "notebook_hash": hashlib.sha256(path.read_bytes()).hexdigest(),
        "parameters": json.dumps(recorded, default=str, sort_keys=True), "broker": broker,
        "git_revision": git_revision(path.parent), "kit_version": version("kit"), "output_path": str(output),
    })
    environment = {"KIT_DB": str(ledger_path)} | ({"KIT_DRY_RUN": "1"} if dry_run else {})
    try:
        with _environment(environment):
            papermill.execute_notebook(str(path), str(output), injected, progress_bar=False,
                                       execution_timeout=execution_timeout)
    except Exception as exc:
        return _finish(ledger_path, run_id, run_key, output, exc)
    except BaseException as exc:  # Ctrl-C: record why the run stopped, then stop
        _finish(ledger_path, run_id, run_key, output, exc)
        raise
    return _finish(ledger_path, run_id, run_key, output, None)


def run_notebook(job: Job, slot: datetime, run_key: str) -> NotebookRun:
    """The runner `kit schedule` calls for one slot of a job; raises RunFailed so the scheduler reports it.

    `slot` is already in `run_key`, which is what makes a retried slot resume.
    """
    result = execute_notebook(job.notebook, job.parameters, run_key=run_key)
    if not result.ok:
        raise RunFailed(f"{job.notebook} ({run_key}) failed: {result.error_name}: {result.error}")
    return result


def git_revision(directory: Path) -> str | None:
    """HEAD of the repository holding the notebook, or None outside one (or without git): never an error."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# ---- the command line ------------------------------------------------------------------------------------
def register(commands: argparse._SubParsersAction) -> None:
    """Add `kit run` and `kit params` to the `kit` command's subparsers."""
    run = commands.add_parser(
        "run", help="run a notebook with papermill and record it in the ledger",
        description="Run NOTEBOOK with papermill; the output notebook goes under data/runs/<UTC date>/. "
                    "The run key defaults to <notebook name>-<UTC date>, so a retry resumes the run.")
    run.add_argument("notebook", type=Path)
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], dest="parameters",
                     metavar=("NAME", "VALUE"), help="a notebook parameter, typed like papermill's -p")
    run.add_argument("--run-key", help="the run's key (default: <notebook name>-<UTC date>)")
    run.add_argument("--execution-timeout", type=int, metavar="S", help="seconds each cell may take")
    run.add_argument("--dry-run", action="store_true", help="plan without sending (KIT_DRY_RUN=1)")
    run.add_argument("--broker", choices=("mock", "ib"), help="sets the notebook's broker parameter")
    run.set_defaults(handler=cmd_run)
    params = commands.add_parser("params", help="a notebook's parameters, defaults and comments")
    params.add_argument("notebook", type=Path)
    params.set_defaults(handler=cmd_params)


def cmd_run(args: argparse.Namespace) -> int:
    """`kit run`: exit status 0 when the run is done, partial or skipped, 1 when it failed."""
    parameters = {name: parse_value(value) for name, value in args.parameters}
    if args.broker is not None:
        if parameters.get("broker", args.broker) != args.broker:
            raise KitError(f"--broker {args.broker} and -p broker {parameters['broker']} disagree")
        parameters["broker"] = args.broker
    result = execute_notebook(args.notebook, parameters, run_key=args.run_key, db=args.db,
                              execution_timeout=args.execution_timeout, dry_run=args.dry_run)
    _print_result(result, args.db)
    return 0 if result.ok else 1


def cmd_params(args: argparse.Namespace) -> int:
    """`kit params`: the parameters cell, one line per parameter, as it reads in the notebook."""
    declared = notebook_parameters(args.notebook)
    if not declared:
        print(f"{args.notebook} has no parameters cell (a code cell tagged 'parameters')")
        return 0
    width = max(len(_declaration(p)) for p in declared.values())
    for name, parameter in declared.items():
        notes = [parameter["help"]] if parameter["help"] else []
        if name in RESERVED:
            notes.append(f"[kit run sets this: {RESERVED[name]}]")
        print(f"{_declaration(parameter):<{width}}  # {' '.join(notes)}".rstrip(" #"))
    return 0


# ---- helpers ---------------------------------------------------------------------------------------------
def _existing(notebook: str | Path) -> Path:
    path = Path(notebook)
    if not path.is_file():
        raise KitError(f"no notebook at {path}")
    return path


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # kit stores naive UTC timestamps


def _literal(source: str | None) -> Any:
    """A default from the parameters cell as a value, or None when it is not a plain literal."""
    try:
        return ast.literal_eval(source) if source is not None else None
    except (ValueError, SyntaxError):
        return None


def _declaration(parameter: Mapping[str, str]) -> str:
    typed = "" if parameter["inferred_type_name"] == "None" else f": {parameter['inferred_type_name']}"
    return f"{parameter['name']}{typed} = {parameter['default']}"


def _kernel_parameters(declared: Mapping[str, Any], given: Mapping[str, Any], run_key: str, db: Path,
                       dry_run: bool) -> dict[str, Any]:
    """What papermill injects: the user's values, then the runner's own for the parameters the notebook has.

    A name the notebook does not declare is refused rather than injected: a typo such as `-p brokr ib`
    must not leave the notebook on its default broker.
    """
    for name in given:
        if name in RESERVED:
            raise KitError(f"{name} is set by kit run: use {RESERVED[name]} instead of -p {name}")
        if name not in declared:
            raise KitError(f"the notebook has no parameter {name!r}; it has: {', '.join(declared) or 'none'}")
    own = {"run_key": run_key, "db": str(db), "dry_run": dry_run}
    return dict(given) | {name: value for name, value in own.items() if name in declared}


@contextmanager
def _open(db: Path) -> Iterator[Ledger]:
    """The ledger, open only around a write: the kernel's kit.execute needs it while the notebook runs."""
    import duckdb

    from kit.store import Ledger

    try:
        ledger = Ledger(db).open()
    except duckdb.IOException as exc:
        raise KitError(f"cannot open the ledger {db} (another process holds it?): {exc}") from exc
    try:
        yield ledger
    finally:
        ledger.close()


def _begin(db: Path, run_id: str, run_key: str, started: datetime, info: dict[str, Any]) -> None:
    """Create the run row, or mark an existing run running again with this attempt's notebook details."""
    with _open(db) as ledger:
        if ledger.run_row(run_id) is None:
            ledger.insert_run({"run_id": run_id, "run_key": run_key, "status": "running",
                               "started_at": started, **info})
        else:
            ledger.update_run(run_id, status="running", ended_at=None, error_name=None, error=None, **info)


def _finish(db: Path, run_id: str, run_key: str, output: Path, error: BaseException | None) -> NotebookRun:
    """Settle the run's status: the notebook's error or Skip wins; a clean end keeps what kit.execute set.

    papermill records a notebook's own exception in the output notebook, but not a cell timeout or a dead
    kernel, so the run row is where all of them are recorded.
    """
    values: dict[str, Any] = {"ended_at": _utcnow(), "output_path": str(output) if output.exists() else None}
    if error is not None:
        values["error_name"], values["error"] = _describe(error)
    with _open(db) as ledger:
        status = ledger.run_row(run_id)["status"]
        if error is not None:
            status = "skipped" if values["error_name"] == Skip.__name__ else "failed"
        elif status == "running":
            status = "done"  # the notebook ended cleanly without trading under this run_key
        ledger.update_run(run_id, status=status, **values)
        row = ledger.run_row(run_id)
    return NotebookRun(run_id, run_key, status, Path(row["output_path"]) if row["output_path"] else None,
                       row["error_name"], row["error"])


def _describe(error: BaseException) -> tuple[str, str]:
    """(name, message): for an exception raised in the notebook, its own, as papermill reports them."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        return error.ename, error.evalue
    return type(error).__name__, str(error)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables for the kernel about to start; papermill has no other way to give it an environment."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _print_result(result: NotebookRun, db: str | None) -> None:
    from kit.engine import Run
    from kit.store import Ledger

    ledger = Ledger(db)
    print(Run(result.run_id, result.run_key, result.status, ledger.orders(result.run_id),
              ledger.fills(result.run_id)).summary())
    if result.error_name:
        print(f"  {'reason' if result.status == 'skipped' else 'error'}: {result.error_name}: {result.error}")
    if result.output_path:
        print(f"  output notebook: {result.output_path}")

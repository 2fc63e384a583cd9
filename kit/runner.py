"""Run a parameterized notebook headlessly with papermill, as one ledger run (`kit run`, `kit params`).

The runner writes the run's row before the kernel starts and finishes it after the kernel is gone, so a
notebook that fails, times out or kills its kernel is still on record, and papermill's own output notebook
is archived beside it. It passes a deterministic run_key (notebook name + UTC date unless told otherwise),
so running a job again resumes its run instead of sending its orders twice.

Notebooks import this module for `Skip`, so papermill and the ledger (seconds of imports) load only when a
run starts.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.clock import utcnow
from kit.config import ledger_target, redacted, url_password
from kit.config import runs_dir as default_runs_dir
from kit.errors import Interrupted, KitError
from kit.ids import RESERVED, check_run_key, run_id_for
from kit.model import RunStatus

if TYPE_CHECKING:
    from kit.store import Ledger

log = logging.getLogger(__name__)

# Parameters the runner sets itself, and the option that sets each; `-p` may not set them.
# What a notebook's `broker` parameter may be: the names kit.api.make_broker knows.
BROKERS = ("mock", "ib")
# The types a parameter can be checked against before a kernel starts; other annotations are not checked.
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
# How much of a failing cell's traceback a run result keeps: enough to see the failing line and its caller.
TRACEBACK_LINES = 8
# Modules papermill's imports load that running a notebook never uses: jsonschema (through nbformat) imports
# rfc3987_syntax when it is installed, to check the "iri" formats, and that builds a grammar on import (about
# 2 s, most of papermill's own import time). nbformat's notebook schemas use no such format.
NEEDLESS_IMPORTS = ("rfc3987_syntax",)


class Skip(Exception):
    """Raise it in a notebook to end the run early and cleanly: recorded as `skipped`, exit status 0.

    Raise Skip itself, not a subclass: papermill reports a notebook's exception by class name only.
    """



@dataclass(frozen=True)
class NotebookRun:
    """How a notebook run ended, as its run row records it."""

    run_id: str
    run_key: str
    status: str  # a RunStatus: done | partial | failed | skipped | planned (a dry run)
    output_path: Path | None
    error_name: str | None = None
    error: str | None = None
    cell: int | None = None  # the failing cell, counted from 1 as Jupyter shows cells
    traceback: tuple[str, ...] = ()  # the last lines of the failing cell's traceback
    interrupted: str | None = None  # the signal that interrupted the run (SIGINT, SIGTERM), if one did
    kernel_said: tuple[str, ...] = ()  # a dead kernel's last lines on its own stderr (kept in kernel_log)
    kernel_log: Path | None = None  # that stderr, next to the output notebook, when it wrote anything

    @property
    def ok(self) -> bool:
        return self.status != RunStatus.FAILED


def spare_needless_imports() -> None:
    """In a process that runs notebooks and does nothing else (`kit run`, `kit schedule`), do not import
    NEEDLESS_IMPORTS: jsonschema then skips the format checks they provide, which no notebook schema asks
    for. Not done for a caller's own process (Airflow's, a script's), whose jsonschema may need them."""
    for name in NEEDLESS_IMPORTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import fails", Python's rule


def parse_value(text: str) -> Any:
    """A `-p` value typed the way papermill's own `-p` types it: True/False/None, int, float, else str."""
    from papermill.cli import _resolve_type  # private, but it is exactly papermill's rule (pinned 2.7)

    return _resolve_type(text)


def typed_parameters(notebook: str | Path, texts: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs as the notebook's parameters cell types them, checked before any kernel starts.

    A parameter whose default is a string keeps the text as typed (`-p prices_file 2026.csv` stays a str);
    the others are typed like papermill's `-p`, then checked against the cell (see check_parameters).
    """
    declared = notebook_parameters(notebook)
    values = {}
    for name, text in texts:
        expected = _expected_type(declared[name]) if name in declared else None
        values[name] = text if expected is str else parse_value(text)
    check_parameters(declared, values)
    return values


def check_parameters(declared: Mapping[str, Mapping[str, str]], given: Mapping[str, Any]) -> None:
    """Refuse, before a kernel starts, a parameter the notebook does not declare, one kit run sets itself,
    or a value of the wrong type for the cell's annotation or default (an int passes for a float; None
    passes where the default is None). A failing cell ten seconds into a run is a worse place to learn it.
    """
    for name, value in given.items():
        if name in RESERVED:
            raise KitError(f"{name} is set by kit run: use {RESERVED[name]} instead of -p {name}")
        if name not in declared:
            raise KitError(f"the notebook has no parameter {name!r}; it has: {', '.join(declared) or 'none'}")
        parameter = declared[name]
        expected = _expected_type(parameter)
        if expected is not None and not _fits(value, expected):
            raise KitError(f"parameter {name}: {value!r} is not {_article(expected.__name__)} "
                           f"(the notebook's default is {parameter['default']})")
    if "broker" in given and given["broker"] not in BROKERS:
        raise KitError(f"parameter broker: {given['broker']!r} is not a broker; use {' or '.join(BROKERS)}")


def notebook_parameters(notebook: str | Path) -> dict[str, dict[str, str]]:
    """The parameters cell as papermill reads it: name -> {name, inferred_type_name, default, help}.

    `kit run` checks `-p` names against it, and `kit params` prints it.
    """
    path = _existing(notebook).resolve()
    stat = path.stat()
    return copy.deepcopy(_inspected(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _inspected(path: str, mtime_ns: int, size: int) -> dict[str, dict[str, str]]:
    """papermill's reading of one version of a notebook file: `kit run` needs it twice (the `-p` check,
    then the run), and each reading parses and validates the whole notebook."""
    import papermill
    from nbformat import ValidationError
    from nbformat.reader import NotJSONError

    try:
        return papermill.inspect_notebook(path)
    except (NotJSONError, ValidationError) as exc:  # nbformat's own words say what is wrong with the file
        raise KitError(f"{path} is not a notebook nbformat can read: {str(exc).splitlines()[0]}") from None


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
    runs_dir: str | Path | None = None,
) -> NotebookRun:
    """Run `notebook` with papermill as the run `run_key` and record it in the ledger; never raises for a
    failing notebook (the result and the run row say what happened), only for a request kit refuses.

    `execution_timeout` limits each cell, in seconds. `dry_run` sets KIT_DRY_RUN=1 in the kernel and the
    notebook's `dry_run` parameter if it has one.
    """
    import papermill

    path = _existing(notebook).resolve()
    started = utcnow()
    # None: the notebook's default key; an explicit key, even an empty one, must be usable.
    run_key = check_run_key(default_run_key(path, started, dry_run) if run_key is None else run_key)
    run_id = run_id_for(run_key)
    ledger_path = ledger_target(db)  # a PostgreSQL URL stays a URL; its password reaches the kernel apart
    ledger_path = ledger_path if isinstance(ledger_path, str) else ledger_path.resolve()
    shown, password = (redacted(ledger_path), url_password(ledger_path)) if isinstance(ledger_path, str) \
        else (ledger_path, None)
    declared = notebook_parameters(path)
    injected = _kernel_parameters(declared, parameters or {}, run_key, shown, dry_run)
    if "run_key" not in declared:
        log.warning("%s has no run_key parameter: its orders are not tied to run %s, and a retry may send "
                    "them again", path.name, run_key)
    recorded = injected | ({"dry_run": True} if dry_run else {})  # a dry run shows, even without a parameter
    folder = Path(runs_dir or default_runs_dir()) / f"{started:%Y-%m-%d}"
    output = (folder / f"{path.stem}-{run_id}.ipynb").resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    broker = injected.get("broker", _literal(declared.get("broker", {}).get("default")))
    _begin(ledger_path, run_id, run_key, started, {
        "notebook": str(path), "notebook_hash": hashlib.sha256(path.read_bytes()).hexdigest(),
        "parameters": json.dumps(recorded, default=str, sort_keys=True), "broker": broker,
        "git_revision": git_revision(path.parent), "kit_version": version("kit"), "output_path": str(output),
    })
    environment = {"KIT_DB": str(shown)} | ({"KIT_DRY_RUN": "1"} if dry_run else {}) \
        | ({"PGPASSWORD": password} if password else {})
    from kit.kernel import ENGINE, Interrupts

    interrupts = Interrupts()
    kernel_log = output.with_name(output.stem + ".kernel.log")
    try:
        with (_environment(environment), tempfile.TemporaryDirectory(prefix="kit-kernel-") as sockets,
              interrupts.installed()):
            papermill.execute_notebook(str(path), str(output), injected, progress_bar=False,
                                       execution_timeout=execution_timeout, engine_name=ENGINE,
                                       interrupts=interrupts, config=_kernel_config(Path(sockets)),
                                       kernel_stderr=str(kernel_log))
    except Exception as exc:
        result = _finish(ledger_path, run_id, run_key, output, exc, interrupts.first, kernel_log)
    except BaseException as exc:  # a third interrupt, or one before the kernel ran: record it, then stop
        result = _finish(ledger_path, run_id, run_key, output, exc, interrupts.first, kernel_log)
        if interrupts.first is None:
            raise
    else:
        result = _finish(ledger_path, run_id, run_key, output, None, interrupts.first, kernel_log)
    if result.interrupted:
        raise Interrupted(f"{result.interrupted}: run {run_key} ended {result.status}", result)
    return result


def _kernel_config(sockets: Path) -> Any:
    """Configuration of the kernel manager papermill creates: on POSIX the kernel talks to kit run over
    IPC sockets in `sockets` (a private temporary folder: short enough for a socket path, and not the
    user's working folder, where jupyter_client would put them by default) instead of TCP ports on
    loopback. No port is opened, and ipykernel has no reason to log that its TCP traffic is unencrypted
    ("Kernel is running over TCP without encryption", on the user's terminal at every run). ZeroMQ has
    no IPC transport on Windows."""
    from traitlets.config import Config

    if os.name != "posix":
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})


def git_revision(directory: Path) -> str | None:
    """HEAD of the repository holding the notebook, or None outside one (or without git): never an error."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# ---- helpers ---------------------------------------------------------------------------------------------
def _existing(notebook: str | Path) -> Path:
    path = Path(notebook)
    if not path.is_file():
        raise KitError(f"no notebook at {path}")
    return path


def _expected_type(parameter: Mapping[str, str]) -> type | None:
    """The type a parameter's annotation names, else its default's (None: anything goes)."""
    if parameter["inferred_type_name"] in _TYPES:
        return _TYPES[parameter["inferred_type_name"]]
    if parameter["inferred_type_name"] != "None":
        return None  # an annotation such as "list[str]" or "Optional[int]": papermill knows better
    default = _literal(parameter["default"])
    return type(default) if type(default) in _TYPES.values() else None


def _fits(value: Any, expected: type) -> bool:
    """True/False are bools only (Python counts them as ints), and an int is a fine float."""
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    return isinstance(value, int | float) if expected is float else isinstance(value, expected)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _literal(source: str | None) -> Any:
    """A default from the parameters cell as a value, or None when it is not a plain literal."""
    try:
        return ast.literal_eval(source) if source is not None else None
    except (ValueError, SyntaxError):
        return None


def _kernel_parameters(declared: Mapping[str, Any], given: Mapping[str, Any], run_key: str, db: Path,
                       dry_run: bool) -> dict[str, Any]:
    """What papermill injects: the user's values, then the runner's own for the parameters the notebook has.

    A name the notebook does not declare is refused rather than injected: a typo such as `-p brokr ib`
    must not leave the notebook on its default broker.
    """
    check_parameters(declared, given)
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
            ledger.insert_run({"run_id": run_id, "run_key": run_key, "status": RunStatus.RUNNING,
                               "started_at": started, **info})
        else:
            ledger.update_run(run_id, status=RunStatus.RUNNING, ended_at=None, error_name=None, error=None,
                              **info)


def _finish(db: Path, run_id: str, run_key: str, output: Path, error: BaseException | None,
            interrupted: str | None = None, kernel_log: Path | None = None) -> NotebookRun:
    """Settle the run's status: the notebook's error or Skip wins; a clean end keeps what kit.execute set.

    papermill records a notebook's own exception in the output notebook, but not a cell timeout or a dead
    kernel, so the run row is where all of them are recorded. An interrupt that came once the last cell had
    run (`interrupted` without an error) changed nothing: the run keeps its status, and the result says it.
    """
    values: dict[str, Any] = {"ended_at": utcnow(), "output_path": str(output) if output.exists() else None}
    if error is not None:
        values["error_name"], values["error"] = _describe(error)
        if interrupted is not None and interrupted not in values["error"]:
            values["error"] = f"{values['error']} (kit run received {interrupted})"
    cell, lines = _where(error, output)
    if kernel_log is not None and kernel_log.exists() and not kernel_log.stat().st_size:
        kernel_log.unlink()
    kept = kernel_log if kernel_log is not None and kernel_log.exists() else None
    # a dead kernel or a timeout (no cell to blame): what the kernel process last said
    said = _last_lines(kept) if error is not None and cell is None and kept is not None else ()
    with _open(db) as ledger:
        status = ledger.run_row(run_id)["status"]
        if error is not None:
            status = RunStatus.SKIPPED if values["error_name"] == Skip.__name__ else RunStatus.FAILED
        elif status == RunStatus.RUNNING:
            status = RunStatus.DONE  # the notebook ended cleanly without trading under this run_key
        ledger.update_run(run_id, status=status, **values)
        row = ledger.run_row(run_id)
    return NotebookRun(run_id, run_key, status, Path(row["output_path"]) if row["output_path"] else None,
                       row["error_name"], row["error"], cell, lines, interrupted, said, kept)


def _describe(error: BaseException) -> tuple[str, str]:
    """(name, message): for an exception raised in the notebook, its own, as papermill reports them."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        return error.ename, error.evalue
    return type(error).__name__, str(error)


def _where(error: BaseException | None, output: Path) -> tuple[int | None, tuple[str, ...]]:
    """The failing cell, numbered from 1 as in the notebook the user wrote, and the last lines of its
    traceback without colours. None for a timeout or a dead kernel, which papermill ties to no cell."""
    from papermill.exceptions import PapermillExecutionError, strip_color

    if not isinstance(error, PapermillExecutionError):
        return None, ()
    lines = [line for text in error.traceback for line in strip_color(text).splitlines()
             if line.strip(" -")]  # IPython's rule of dashes says nothing
    return error.cell_index + 1 - _injected_before(output, error.cell_index), tuple(lines[-TRACEBACK_LINES:])


def _last_lines(path: Path) -> tuple[str, ...]:
    """The end of the kernel process's own stderr: why it died, when it did (a C library's abort, a fatal
    Python error)."""
    text = path.read_bytes()[-16384:].decode(errors="replace")
    return tuple(line for line in text.splitlines() if line.strip())[-TRACEBACK_LINES:]


def _injected_before(output: Path, index: int) -> int:
    """1 if papermill's injected-parameters cell comes before cell `index` of the output notebook (papermill
    counts cells there, and the user's notebook does not have that cell), else 0."""
    try:
        cells = json.loads(output.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return 0
    tags = [cell.get("metadata", {}).get("tags", ()) for cell in cells]
    executed = [t for t in tags if "papermill-error-cell-tag" not in t][:index]  # not papermill's banners
    return int(any("injected-parameters" in t for t in executed))


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

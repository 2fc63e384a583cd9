"""Configuration: kit.toml and the KIT_* environment, checked against one typed schema; the one path resolver.

The environment wins over the file, so a scheduled job can override a team-wide file. Both are checked
against kit.config_schema before any value is used: an unknown key or variable is refused with the nearest
valid name (a misspelt `dryrun = true` must not send real orders), a value of the wrong type is refused
with the file or variable, the key and the type expected, and nothing is coerced (`ib_port = 4002.7` is
not port 4002). Secrets never live here: IB credentials stay in TWS / IB Gateway, never in kit, a
notebook or the ledger. docs/configuration.md lists every setting.

Relative paths (the ledger, the halt file, `kit run`'s output notebooks, the scheduler's state and locks,
KIT_CONFIG) are taken from the project root: the nearest directory at or above the working directory that
holds a kit.toml or pyproject.toml. A notebook that JupyterLab runs from `notebooks/` must write to the
same ledger as `make demo` at the root.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import ConfigError
from kit.risk import RiskLimits

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kit.config_schema import Settings

PREFIX = "KIT_"
_UNSET: Any = object()


# ---- paths ----------------------------------------------------------------------------------------------
def project_root() -> Path:
    here = Path.cwd()
    for directory in (here, *here.parents):
        if (directory / "kit.toml").is_file() or (directory / "pyproject.toml").is_file():
            return directory
    return here


def project_path(path: str | os.PathLike[str]) -> Path:
    """The one path resolver: a relative default or configured path is taken from the project root, so two
    processes started from different folders agree on every file kit keeps."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


def config_file() -> Path:
    """KIT_CONFIG (read from the environment only: the file cannot name itself), else kit.toml at the root.
    A file that does not exist means no file: every setting has a default."""
    named = os.environ.get("KIT_CONFIG")
    return project_path(named) if named else project_root() / "kit.toml"


# ---- the validated settings -----------------------------------------------------------------------------
_cache: tuple[tuple[Any, ...], Settings] | None = None


def settings() -> Settings:
    """Every setting, typed and checked (kit.config_schema.Settings). Raises ConfigError naming every bad
    key. Cached until kit.toml changes (mtime, size) or a KIT_* variable does, so calls stay cheap."""
    global _cache
    path = config_file()
    try:
        stat = path.stat()
        stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX)))
    key = (str(path), stamp, environment)
    if _cache is None or _cache[0] != key:
        _cache = (key, _load(path if stamp is not None else None, dict(environment)))
    return _cache[1]


def setting(name: str, default: Any = _UNSET) -> Any:
    """One setting by its environment name (KIT_IB_PORT, KIT_RISK_MAX_ORDERS), already typed: its value when
    set in the environment or kit.toml, else `default` when given, else the schema's default. A name that is
    not in the schema is an error, so every setting kit reads is checked."""
    loc = _env_location(name)
    if loc is None:
        raise ConfigError(f"{name} is not a kit setting{_hint(name, _env_names())}")
    model: Any = settings()
    for part in loc[:-1]:
        model = getattr(model, part)
    if loc[-1] not in model.model_fields_set and default is not _UNSET:
        return default
    return getattr(model, loc[-1])


def truthy(value: Any) -> bool:
    """A flag written as text (an environment value): true only for the schema's own true words, `1` and
    `true`."""
    return str(value).strip().lower() in {"1", "true"}


def risk_limits(overrides: Mapping[str, Any] | RiskLimits | None = None) -> RiskLimits:
    """The limits `risk.check` applies: [risk] in kit.toml, then KIT_RISK_*, then `overrides` (a call's
    risk={...}; None there turns a configured limit off). A RiskLimits object is taken as it is."""
    if isinstance(overrides, RiskLimits):
        return overrides
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"risk= takes a dict of limits or a RiskLimits, not {overrides!r}")
    from kit.config_schema import RiskSettings

    given = {name: _plain(value) for name, value in (overrides or {}).items()}
    source = _Source(lambda loc: f"risk limit {_dotted(loc)}",
                     lambda loc: f"unknown risk limit {_dotted(loc)!r}")
    checked = _validate(RiskSettings, settings().risk.model_dump() | given, source)
    values = checked.model_dump()
    symbols = values.pop("allowed_symbols")
    # Only the built-in defaults let an order without a price pass the notional limits (kit.risk).
    chosen = settings().risk.model_fields_set | set(given)
    price_required = any(values[name] is not None for name in chosen & {"max_order_notional",
                                                                         "max_gross_notional"})
    return RiskLimits(**values, allowed_symbols=None if symbols is None else frozenset(symbols),
                      price_required=price_required)


# ---- what the shells read -------------------------------------------------------------------------------
def db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The ledger: `db` as given (relative to the working directory, like any argument), else KIT_DB."""
    return Path(db) if db is not None else project_path(settings().db)


LEDGER_URL_SCHEMES = ("postgresql://", "postgres://")


def is_ledger_url(db: object) -> bool:
    """Whether `db` names a PostgreSQL ledger (a libpq URL) rather than a DuckDB file."""
    return isinstance(db, str) and db.startswith(LEDGER_URL_SCHEMES)


def ledger_target(db: str | os.PathLike[str] | None = None) -> str | Path:
    """The ledger `db` (or KIT_DB) names: a PostgreSQL URL kept as given, else db_path's file."""
    chosen = settings().db if db is None else db
    if is_ledger_url(chosen):
        return str(chosen)
    return db_path(db)


def redacted(url: str) -> str:
    """A ledger URL without its password (in the authority or as a `password=` parameter): what kit prints,
    logs and keys its journal by."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_password(url: str) -> str | None:
    """The password a ledger URL carries, if any (so a child process can get it from PGPASSWORD instead)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    if parts.password is not None:
        return unquote(parts.password)
    return dict(parse_qsl(parts.query)).get("password")


def runs_dir() -> Path:
    """Where `kit run` keeps output notebooks (one folder per UTC date)."""
    return project_path(settings().runs_dir)


def schedule_state_path() -> Path:
    """The scheduler's state file: the last slot run per job."""
    return project_path(settings().schedule_state)


def lock_dir() -> Path:
    """Per-job (and per-run-key) lock files."""
    return project_path(settings().lock_dir)


def journal_dir() -> Path:
    """Where a PostgreSQL ledger keeps this machine's journal while the server cannot be reached."""
    return project_path(settings().journal_dir)


def halt_file() -> Path:
    return project_path(settings().halt_file)


def halted() -> str | None:
    """Why new submissions are stopped, or None. The file survives restarts; the variable is per process."""
    if settings().halt:
        return "KIT_HALT is set"
    path = halt_file()
    if path.exists():
        reason = path.read_text().strip()
        return f"{path} exists" + (f": {reason}" if reason else "")
    return None


@dataclass(frozen=True)
class IBSettings:
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 17
    account: str = ""
    allow_live: bool = False
    connect_timeout: float = 10.0
    reconnect_window: float = 120.0

    @classmethod
    def load(cls) -> IBSettings:
        config = settings()
        return cls(host=config.ib_host, port=config.ib_port, client_id=config.ib_client_id,
                   account=config.ib_account, allow_live=config.allow_live,
                   connect_timeout=config.ib_connect_timeout, reconnect_window=config.ib_reconnect_window)


# ---- loading and checking -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """How a problem names where it is: `subject(loc)` for a bad value, `unknown(loc)` for an unknown key."""

    subject: Callable[[tuple[str, ...]], str]
    unknown: Callable[[tuple[str, ...]], str]
    # The value as the user wrote it (an environment variable's text, not the number it was parsed into).
    written: Callable[[tuple[str, ...], Any], str] = lambda loc, value: _show(value)


def _load(path: Path | None, environment: Mapping[str, str]) -> Settings:
    from kit.config_schema import ENVIRONMENT_ONLY, Settings

    problems: list[str] = []
    from_file = _limits_off(_read_file(path) if path is not None else {})
    for key in sorted(ENVIRONMENT_ONLY & set(from_file)):
        problems.append(f"{path}: {key} can be set only in the environment ({PREFIX}{key.upper()})")
        del from_file[key]

    def unknown_key(loc: tuple[str, ...]) -> str:
        return f"{path}: unknown key {loc[-1]!r}" + (f" in [{loc[0]}]" if len(loc) > 1 else "")

    file_source = _Source(lambda loc: f"{path}: {_toml_key(loc)}", unknown_key)
    problems += _check(Settings, from_file, file_source)[1]

    from_environment: dict[str, Any] = {}
    for name, text in sorted(environment.items()):
        loc = _env_location(name)
        if loc is None:
            problems.append(f"unknown environment variable {name}{_hint(name, _env_names())}")
        elif text != "":  # an empty variable is as if it were not set
            target = from_environment.setdefault(loc[0], {}) if len(loc) > 1 else from_environment
            target[loc[-1]] = _parse(_field(Settings, loc).annotation, text)
    _limits_off(from_environment)
    env_source = _Source(lambda loc: f"environment variable {_env_name(loc)}",
                         lambda loc: f"unknown environment variable {_env_name(loc)}",
                         lambda loc, value: repr(environment[_env_name(loc)]))
    problems += _check(Settings, from_environment, env_source)[1]
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} problems in kit's configuration:\n  " + "\n  ".join(problems))
    merged = from_file | from_environment
    if isinstance(from_file.get("risk"), dict) and "risk" in from_environment:
        merged["risk"] = from_file["risk"] | from_environment["risk"]
    return Settings.model_validate(merged)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if at:
            where = f"line {at[1]}, column {at[2]}"
        else:
            where = f"line {max(1, len(text.splitlines()))} (the end of the file)"
        reason = message[:at.start()] if at else message.removesuffix(" (at end of document)")
        raise ConfigError(f"{path}, {where}: not valid TOML: {reason}") from None


def _validate(model: type[BaseModel], data: Mapping[str, Any], source: _Source) -> Any:
    """`data` as an instance of `model`, or ConfigError with every problem."""
    checked, problems = _check(model, data, source)
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else "\n".join(problems))
    return checked


def _check(model: type[BaseModel], data: Mapping[str, Any], source: _Source) -> tuple[Any, list[str]]:
    """(the instance, []) or (None, one message per problem)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_describe(model, error, source) for error in exc.errors()]


def _describe(model: type[BaseModel], error: Any, source: _Source) -> str:
    loc = tuple(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        from kit.config_schema import ENVIRONMENT_ONLY

        valid = [name for name in _model_at(model, loc[:-1]).model_fields if name not in ENVIRONMENT_ONLY]
        return source.unknown(loc) + _hint(loc[-1], valid, quote=True)
    field_loc = _known(model, tuple(part for part in loc if not part.isdigit()))
    expected = "a rate (a number)" if field_loc[-1:] == ("fx_rates",) and len(loc) > len(field_loc) else \
        "a string" if len(field_loc) < len(loc) else _expected(_field(model, field_loc).annotation)
    shown = source.written(loc, error["input"])
    detail = error["msg"].removeprefix("Input should be ")
    if error["type"].endswith(("_type", "_parsing")) or error["type"] == "literal_error":
        return f"{source.subject(loc)} must be {expected}, not {shown}"
    if detail.startswith(("a ", "an ")):
        return f"{source.subject(loc)} must be {detail}, not {shown}"
    return f"{source.subject(loc)} must be {expected} {detail}, not {shown}"


def _known(model: Any, loc: tuple[str, ...]) -> tuple[str, ...]:
    """The part of `loc` that names fields (a mapping's keys, like fx_rates' currencies, are not fields)."""
    for depth, part in enumerate(loc):
        if not isinstance(model, type) or part not in getattr(model, "model_fields", {}):
            return loc[:depth]
        model = _base(model.model_fields[part].annotation)
    return loc


def _model_at(model: Any, loc: tuple[str, ...]) -> Any:
    for part in loc:
        model = _base(model.model_fields[part].annotation)
    return model


def _limits_off(values: dict[str, Any]) -> dict[str, Any]:
    """A risk limit written "off" is no limit: TOML and the environment cannot write None, and the default
    fat-finger limits must be possible to turn off in kit.toml too."""
    limits = values.get("risk")
    if isinstance(limits, dict):
        values["risk"] = {name: None if value == "off" else value for name, value in limits.items()}
    return values


def _field(model: Any, loc: tuple[str, ...]) -> Any:
    return _model_at(model, loc[:-1]).model_fields[loc[-1]]


def _base(annotation: Any) -> Any:
    """The type a field holds, without Optional and Annotated: `int | None` -> int."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _expected(annotation: Any) -> str:
    base = _base(annotation)
    if typing.get_origin(base) is typing.Literal:
        return "one of " + ", ".join(repr(value) for value in typing.get_args(base))
    if typing.get_origin(base) is list:
        return "a list of strings"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(base, "a table")


def _parse(annotation: Any, text: str) -> Any:
    """An environment value (always a string) as the field's type, accepting only that type's plain written
    form; anything else stays a string, which the strict schema then refuses with the type it expected."""
    base = _base(annotation)
    if base is int and re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    if base is float and re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
        return float(text)
    if base is bool and text.lower() in {"true", "1", "false", "0"}:
        return truthy(text)
    if typing.get_origin(base) is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _plain(value: Any) -> Any:
    """A call's value as the schema takes it: numpy scalars as Python numbers, a set of symbols as a list."""
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return list(value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _hint(name: str, candidates: Iterable[str], quote: bool = False) -> str:
    candidates = list(candidates)
    if name.lower().startswith("risk_") and name[5:].lower() in _risk_names():
        return f" (did you mean [risk] {name[5:].lower()}?)"
    by_case = {candidate.lower(): candidate for candidate in candidates}  # KIT_ib_port is KIT_IB_PORT
    close = difflib.get_close_matches(name.lower(), by_case, n=1, cutoff=0.6)
    if close:
        nearest = by_case[close[0]]
        return f" (did you mean {nearest!r}?)" if quote else f" (did you mean {nearest}?)"
    return f" (valid: {', '.join(candidates)})"


def _risk_names() -> list[str]:
    from kit.config_schema import RiskSettings

    return list(RiskSettings.model_fields)


def _env_names() -> list[str]:
    from kit.config_schema import Settings

    return [f"{PREFIX}{name.upper()}" for name in Settings.model_fields if name != "risk"] + [
        f"{PREFIX}RISK_{name.upper()}" for name in _risk_names()]


def _env_location(name: str) -> tuple[str, ...] | None:
    """KIT_IB_PORT -> ("ib_port",), KIT_RISK_MAX_ORDERS -> ("risk", "max_orders"); None when unknown."""
    from kit.config_schema import Settings

    if not name.startswith(PREFIX) or name != name.upper():
        return None
    key = name[len(PREFIX):].lower()
    if key.startswith("risk_") and key[5:] in _risk_names():
        return ("risk", key[5:])
    if key in Settings.model_fields and key != "risk":
        return (key,)
    return None


def _env_name(loc: tuple[str, ...]) -> str:
    return PREFIX + "_".join(loc).upper()


def _toml_key(loc: tuple[str, ...]) -> str:
    """("risk", "allowed_symbols", "1") -> "[risk] allowed_symbols[1]", as the key reads in kit.toml."""
    return f"[{loc[0]}] {_dotted(loc[1:])}" if len(loc) > 1 else loc[0]


def _dotted(loc: tuple[str, ...]) -> str:
    return "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc).removeprefix(".")

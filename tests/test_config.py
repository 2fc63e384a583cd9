"""The configuration layer: one typed schema for kit.toml and KIT_*, and one path resolver.

A malformed file or environment is refused before anything runs, with a message that names the file (or
the variable), the key and what was expected; nothing is coerced, and an unknown name is refused with the
nearest valid one, because a misspelt `dryrun = true` that kit ignored would send real orders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kit
from kit import config
from kit.brokers.mock import MockBroker
from kit.cli import main
from kit.config_schema import ENVIRONMENT_ONLY, RiskSettings, Settings
from kit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("clean_config")


def write_config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "kit.toml"  # where clean_config points KIT_CONFIG
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ---- malformed files: each refused, naming the file, the key and what was expected ----------------------
MALFORMED_FILES = [
    ("ib_port = 4002.7", "ib_port must be an integer, not 4002.7"),
    ('ib_port = "4002"', "ib_port must be an integer, not '4002'"),
    ("ib_port = true", "ib_port must be an integer, not true"),
    ("ib_port = 70000", "ib_port must be an integer less than or equal to 65535, not 70000"),
    ("ib_client_id = -1", "ib_client_id must be an integer greater than or equal to 0, not -1"),
    ("ib_connect_timeout = 0", "ib_connect_timeout must be a number greater than 0, not 0"),
    ("dryrun = true", "unknown key 'dryrun' (did you mean 'dry_run'?)"),
    ("Dry_Run = true", "unknown key 'Dry_Run' (did you mean 'dry_run'?)"),
    ("dry_run = 1", "dry_run must be true or false, not 1"),
    ('dry_run = "yes"', "dry_run must be true or false, not 'yes'"),
    ('allow_live = "false"', "allow_live must be true or false, not 'false'"),
    ("halt = 0", "halt must be true or false, not 0"),
    ("db = 5", "db must be a string, not 5"),
    ('halt_file = ["data/HALT"]', "halt_file must be a string, not ['data/HALT']"),
    ("ledger_wait = -5", "ledger_wait must be a number greater than or equal to 0, not -5"),
    ('ib_library = "ib-async"', "ib_library must be one of 'ib_async', 'ib_insync', not 'ib-async'"),
    ('config = "other.toml"', "config can be set only in the environment (KIT_CONFIG)"),
    ("crash_at = 'submit'", "unknown key 'crash_at'"),
    ("risk_max_orders = 3", "unknown key 'risk_max_orders' (did you mean [risk] max_orders?)"),
    ("risk = 5", "risk must be a table, not 5"),
    ("[ib]\nport = 4002", "unknown key 'ib' (valid: db, ib_host,"),
    ("[risk]\nmax_orders = false", "[risk] max_orders must be an integer, not false"),
    ("[risk]\nmax_orders = 2.0", "[risk] max_orders must be an integer, not 2.0"),
    ('[risk]\nmax_order_notional = "1e6"', "[risk] max_order_notional must be a number, not '1e6'"),
    ("[risk]\nmax_order_notional = nan", "[risk] max_order_notional must be a finite number, not nan"),
    ("[risk]\nmax_gross_notional = inf", "[risk] max_gross_notional must be a finite number, not inf"),
    ("[risk]\ncollar = -0.1", "[risk] collar must be a number greater than or equal to 0, not -0.1"),
    ("[risk]\nmax_oder_quantity = 100",
     "unknown key 'max_oder_quantity' in [risk] (did you mean 'max_order_quantity'?)"),
    ('[risk]\nallowed_symbols = "AAPL,MSFT"',
     "[risk] allowed_symbols must be a list of strings, not 'AAPL,MSFT'"),
    ('[risk]\nallowed_symbols = ["AAPL", 1]', "[risk] allowed_symbols[1] must be a string, not 1"),
    ("[risk.desk]\nmax_orders = 1", "unknown key 'desk' in [risk]"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED_FILES, ids=[t for t, _ in MALFORMED_FILES])
def test_a_malformed_kit_toml_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as caught:
        config.settings()
    assert str(caught.value).startswith(f"{path}: {message}")


SYNTAX_ERRORS = [
    ("ib_port = 4002\ndry_run = \n", "line 2, column 11: not valid TOML: Invalid value"),
    ("[risk\nmax_orders = 1\n", "line 1, column 6: not valid TOML: Expected ']' at the end of a table"),
    ("dry_run = true\n[risk]\n[risk]\n", "line 3, column 6: not valid TOML: Cannot declare ('risk',) twice"),
    ('ib_host = "127.0.0.1\n', "line 1, column 21: not valid TOML: Illegal character"),
    ("ib_port = 4002\nib_port = 4003\n", "line 2, column 15: not valid TOML: Cannot overwrite a value"),
]


@pytest.mark.parametrize(("text", "message"), SYNTAX_ERRORS, ids=[m for _, m in SYNTAX_ERRORS])
def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}, {message}")):
        config.settings()


def test_a_file_that_is_not_text_or_not_a_file_is_named(tmp_path, monkeypatch):
    path = write_config(tmp_path, b'db = "\xff"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not UTF-8 text (byte 6)")):
        config.settings()
    monkeypatch.setenv("KIT_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot be read: Is a directory")):
        config.settings()


# ---- malformed environments: each refused, naming the variable and what was expected --------------------
MALFORMED_ENVIRONMENTS = [
    ("KIT_IB_PORT", "4002.7", "environment variable KIT_IB_PORT must be an integer, not '4002.7'"),
    ("KIT_IB_PORT", "4_002", "environment variable KIT_IB_PORT must be an integer, not '4_002'"),
    ("KIT_IB_PORT", "0x0fa2", "environment variable KIT_IB_PORT must be an integer, not '0x0fa2'"),
    ("KIT_IB_CLIENT_ID", " 17", "environment variable KIT_IB_CLIENT_ID must be an integer, not ' 17'"),
    ("KIT_IB_PORT", "0", "KIT_IB_PORT must be an integer greater than or equal to 1, not '0'"),
    ("KIT_DRYRUN", "1", "unknown environment variable KIT_DRYRUN (did you mean KIT_DRY_RUN?)"),
    ("KIT_ib_port", "4002", "unknown environment variable KIT_ib_port (did you mean KIT_IB_PORT?)"),
    ("KIT_DRY_RUN", "yes", "environment variable KIT_DRY_RUN must be true or false, not 'yes'"),
    ("KIT_ALLOW_LIVE", "2", "environment variable KIT_ALLOW_LIVE must be true or false, not '2'"),
    ("KIT_HALT", "on", "environment variable KIT_HALT must be true or false, not 'on'"),
    ("KIT_RISK_MAX_ORDERS", "false", "KIT_RISK_MAX_ORDERS must be an integer, not 'false'"),
    ("KIT_RISK_MAX_ORDERS", "3.0", "KIT_RISK_MAX_ORDERS must be an integer, not '3.0'"),
    ("KIT_RISK_MAX_ORDER_NOTIONAL", "nan", "KIT_RISK_MAX_ORDER_NOTIONAL must be a number, not 'nan'"),
    ("KIT_RISK_MAX_ORDER_NOTIONAL", "1,000", "KIT_RISK_MAX_ORDER_NOTIONAL must be a number, not '1,000'"),
    ("KIT_RISK_MAX_NOTIONAL", "1e6", "unknown environment variable KIT_RISK_MAX_NOTIONAL (did you mean "
                                     "KIT_RISK_MAX_ORDER_NOTIONAL?)"),
    ("KIT_RISK_COLLAR", "-1", "KIT_RISK_COLLAR must be a number greater than or equal to 0, not '-1'"),
    ("KIT_IB_LIBRARY", "ib_insyn", "KIT_IB_LIBRARY must be one of 'ib_async', 'ib_insync', not 'ib_insyn'"),
    ("KIT_LEDGER_WAIT", "soon", "environment variable KIT_LEDGER_WAIT must be a number, not 'soon'"),
    ("KIT_CRASH_AT", "engine.before_submit", "unknown environment variable KIT_CRASH_AT"),
]


@pytest.mark.parametrize(("name", "value", "message"), MALFORMED_ENVIRONMENTS,
                         ids=[f"{n}={v}" for n, v, _ in MALFORMED_ENVIRONMENTS])
def test_a_malformed_environment_is_refused_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.settings()


def test_every_problem_is_reported_at_once_file_and_environment(tmp_path, monkeypatch):
    path = write_config(tmp_path, "dryrun = true\nib_port = 4002.7\n")
    monkeypatch.setenv("KIT_HALT", "yes")
    with pytest.raises(ConfigError) as caught:
        config.settings()
    assert str(caught.value).splitlines() == [
        "3 problems in kit's configuration:",
        f"  {path}: ib_port must be an integer, not 4002.7",
        f"  {path}: unknown key 'dryrun' (did you mean 'dry_run'?)",
        "  environment variable KIT_HALT must be true or false, not 'yes'",
    ]


# ---- what the user notices: nothing runs on a configuration kit cannot read ------------------------------
BUY = pd.DataFrame({"symbol": ["AAPL"], "side": "BUY", "quantity": [10]})


@pytest.mark.parametrize(("text", "environment"), [
    ("dryrun = true\n", {}),  # the misspelling that used to send real orders
    ("", {"KIT_DRYRUN": "1"}),
    ("[risk]\nmax_orders = false\n", {}),  # used to become 0 and reject everything
])
def test_a_misspelt_or_mistyped_setting_stops_execute_before_anything_is_sent(tmp_path, monkeypatch, db,
                                                                             text, environment):
    write_config(tmp_path, text)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    broker = MockBroker(prices={"AAPL": 100.0})
    with pytest.raises(ConfigError):
        kit.execute(BUY, broker=broker, run_key="typo", db=db, timeout=5)
    assert broker.submitted == []
    assert not db.exists()


def test_the_command_line_says_kit_and_the_problem_and_exits_2(tmp_path, capsys):
    path = write_config(tmp_path, "ib_port = 4002.7\n")
    assert main(["runs"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"kit: {path}: ib_port must be an integer, not 4002.7\n")


# ---- well-formed settings -------------------------------------------------------------------------------
def test_the_file_gives_typed_values_and_the_environment_wins(tmp_path, monkeypatch):
    write_config(tmp_path, 'ib_host = "10.0.0.5"\nib_port = 4001\ndry_run = true\nledger_wait = 3\n'
                           "[risk]\nmax_orders = 7\nmax_position = 500\n")
    monkeypatch.setenv("KIT_IB_PORT", "7497")
    monkeypatch.setenv("KIT_DRY_RUN", "false")
    monkeypatch.setenv("KIT_RISK_MAX_POSITION", "1e3")
    loaded = config.settings()
    assert (loaded.ib_host, loaded.ib_port, loaded.dry_run) == ("10.0.0.5", 7497, False)
    assert loaded.ledger_wait == 3.0 and isinstance(loaded.ledger_wait, float)
    assert (loaded.risk.max_orders, loaded.risk.max_position) == (7, 1000.0)
    assert config.IBSettings.load() == config.IBSettings(host="10.0.0.5", port=7497)


def test_a_flag_read_without_the_schema_means_what_the_schema_means():
    assert [config.truthy(v) for v in ("1", "true", " TRUE ", True)] == [True] * 4
    assert [config.truthy(v) for v in ("0", "false", "", "yes", None)] == [False] * 5


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False),
    ("", False)])
def test_a_boolean_variable_is_true_false_1_or_0_and_empty_is_unset(monkeypatch, value, expected):
    monkeypatch.setenv("KIT_DRY_RUN", value)
    assert config.settings().dry_run is expected


def test_setting_by_environment_name_stays_typed_and_knows_only_the_schema(tmp_path, monkeypatch):
    write_config(tmp_path, "ledger_wait = 2.5\n")
    assert config.setting("KIT_LEDGER_WAIT", 120) == 2.5
    assert config.setting("KIT_LEDGER_READ_WAIT", 99) == 99  # not set: the caller's default
    assert config.setting("KIT_LEDGER_READ_WAIT") == 10.0  # no default given: the schema's
    monkeypatch.setenv("KIT_RISK_MAX_ORDERS", "4")
    assert config.setting("KIT_RISK_MAX_ORDERS") == 4
    with pytest.raises(ConfigError, match=r"KIT_LEDGER_WAITS is not a kit setting \(did you mean KIT_LEDG"):
        config.setting("KIT_LEDGER_WAITS")


def test_settings_are_read_again_when_the_file_or_the_environment_changes(tmp_path, monkeypatch):
    path = write_config(tmp_path, "ib_port = 4001\n")
    first = config.settings()
    assert config.settings() is first  # unchanged: the cached, already checked object
    path.write_text("ib_port = 4003\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert config.settings().ib_port == 4003
    monkeypatch.setenv("KIT_IB_PORT", "4005")
    assert config.settings().ib_port == 4005
    path.unlink()
    monkeypatch.delenv("KIT_IB_PORT")
    assert config.settings().ib_port == 4002


# ---- one schema for every setting, documented -----------------------------------------------------------
def test_every_kit_variable_the_code_names_is_in_the_schema():
    """A setting read anywhere in kit/ (setting("KIT_..."), os.environ, messages) must be one the schema
    checks; otherwise an unknown-variable error would refuse kit's own name."""
    known = {f"KIT_{name.upper()}" for name in Settings.model_fields} | {
        f"KIT_RISK_{name.upper()}" for name in RiskSettings.model_fields}
    named = set()
    for path in (ROOT / "kit").rglob("*.py"):
        named |= set(re.findall(r"\bKIT_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    assert named - known - {"KIT_RISK"} == set()
    assert {"KIT_CONFIG", "KIT_HALT"} <= named  # the scan sees kit's code


def test_every_setting_is_documented_with_its_type_and_default():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_.\[\] ]+)` \| (.+)$", doc, re.MULTILINE))
    documented = {name.removeprefix("[risk] "): row for name, row in rows.items()}
    for name, field in [*Settings.model_fields.items(), *RiskSettings.model_fields.items()]:
        if name == "risk":
            continue
        assert name in documented, f"{name} is not in docs/configuration.md"
        default = field.default
        number = f"{default:,.0f}" if isinstance(default, float) and default >= 1e6 else f"{default:g}" \
            if isinstance(default, int | float) else ""
        shown = "none" if default is None else \
            f"`{json.dumps(default) if isinstance(default, bool | str) else number}`"
        assert documented[name].split(" | ")[1] == shown, f"{name}: the documented default is not {shown}"
    assert {n for n in documented if n in ENVIRONMENT_ONLY} == set(ENVIRONMENT_ONLY)


def test_import_kit_config_does_not_load_the_schema_library():
    """pydantic loads when settings are first read, so `import kit` (and modules importing kit.config)
    stay fast."""
    code = "import sys, kit, kit.config, kit.api; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"


# ---- one path resolver: processes started in different folders agree -----------------------------------
WHERE = ("import json; from kit import config; print(json.dumps([str(p) for p in (config.db_path(), "
         "config.halt_file(), config.runs_dir(), config.schedule_state_path(), config.lock_dir(), "
         "config.config_file())]))")


def resolved_from(folder: Path, **environment: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")} | environment
    result = subprocess.run([sys.executable, "-c", WHERE], cwd=folder, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("layout", ["defaults", "kit.toml paths", "relative KIT_* paths"])
def test_processes_started_at_the_root_and_in_notebooks_agree_on_every_file(tmp_path, layout):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'research'\n")
    environment: dict[str, str] = {}
    if layout == "kit.toml paths":
        (root / "kit.toml").write_text('db = "ledgers/team.duckdb"\nhalt_file = "ops/STOP"\n'
                                       'runs_dir = "out"\nschedule_state = "ops/schedule.json"\n'
                                       'lock_dir = "ops/locks"\n')
    if layout == "relative KIT_* paths":
        environment = {"KIT_DB": "ledgers/mine.duckdb", "KIT_HALT_FILE": "ops/STOP", "KIT_RUNS_DIR": "out",
                       "KIT_SCHEDULE_STATE": "ops/s.json", "KIT_LOCK_DIR": "ops/locks",
                       "KIT_CONFIG": "conf/kit.toml"}
    at_root = resolved_from(root, **environment)
    assert resolved_from(root / "notebooks", **environment) == at_root
    assert all(Path(p).is_relative_to(root) for p in at_root)
    if layout == "defaults":
        assert at_root == [str(root / p) for p in ("data/kit.duckdb", "data/HALT", "data/runs",
                                                    "data/schedule.json", "data/locks", "kit.toml")]
    if layout == "kit.toml paths":
        assert at_root[:5] == [str(root / p) for p in ("ledgers/team.duckdb", "ops/STOP", "out",
                                                        "ops/schedule.json", "ops/locks")]


def test_kit_halt_from_notebooks_stops_a_process_started_at_the_root(tmp_path):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "kit.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    kit_command = Path(sys.executable).with_name("kit")
    subprocess.run([str(kit_command), "halt", "desk closed"], cwd=root / "notebooks", env=env, check=True,
                   capture_output=True)
    code = "from kit import config; print(config.halted())"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out == f"{root / 'data' / 'HALT'} exists: desk closed\n"

"""A command line kit cannot use, for every command kit has (the simulated gateway's too): `kit: <message>`
and exit 2, nothing else: no argparse usage block, no traceback, no other prefix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

KIT = str(Path(sys.executable).parent / "kit")


@pytest.mark.parametrize(("argv", "message"), [
    ([KIT, "gateway", "--port", "x"], "kit: argument --port: invalid int value: 'x'\n"),
    ([KIT, "gateway", "--bogus", "--", "true"], "kit: unrecognized arguments: --bogus\n"),
    ([sys.executable, "-m", "kit.gateway", "--log-level", "LOUD"],
     "kit: argument --log-level: invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR')\n"),
    ([sys.executable, "-m", "kit.gateway", "--prices", "no-such.csv"],
     "kit: no-such.csv: cannot be read: No such file or directory\n"),
    ([KIT, "runs", "--limit", "x"], "kit: argument --limit: 'x' is not a count: use 0 (all) or a positive "
                                    "number\n"),
    ([KIT, "run"], "kit: the following arguments are required: notebook\n"),
])
def test_a_usage_error_is_one_kit_line_and_exit_2(tmp_path, argv, message):
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)

"""`make demo-ib` is coherent: the simulated gateway quotes the prices the notebook decides on.

kit.sample writes the notebook's default prices as a CSV; `kit gateway --prices FILE` quotes each symbol's
last price from it, so the demo's slippage is the gateway's one-tick spread, not the gap between two
unrelated price tables (the issue's 8,185 bps).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from kit.gateway.__main__ import build_config, parse_args
from kit.sample import sample_prices


def quoted(path) -> dict[str, float]:
    config = build_config(parse_args(["--prices", str(path)]))
    return {inst.symbol: inst.price for inst in config.instruments}


def test_the_gateway_quotes_the_notebooks_last_prices(tmp_path, capsys) -> None:
    path = tmp_path / "prices.csv"
    subprocess.run([sys.executable, "-m", "kit.sample", str(path)], check=True)
    last = sample_prices().iloc[-1]
    prices = quoted(path)
    for symbol in ("AAPL", "MSFT", "NFLX", "GOOG", "AMZN"):
        assert prices[symbol] == pytest.approx(last[symbol], abs=0.005)  # to the tick
    assert prices["IBM"] == 185.00  # not in the file: the table's own price
    assert "no instrument for FB" in capsys.readouterr().err  # the sample has FB; the gateway's table not


def test_the_last_non_empty_price_of_each_column_counts(tmp_path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("date,AAPL,MSFT\n2026-01-02,100,200\n2026-01-09,101.234,\n")
    prices = quoted(path)
    assert (prices["AAPL"], prices["MSFT"]) == (101.23, 200.0)


@pytest.mark.parametrize(("text", "message"), [
    ("date,AAPL\n2026-01-02,abc\n", "AAPL has a price that is not a number: 'abc'"),
    ("date,AAPL\n2026-01-02,-5\n", "the price of AAPL must be positive"),
    ("date\n2026-01-02\n", "no prices"),
])
def test_a_bad_prices_file_is_refused_by_kit_gateway(tmp_path, text, message) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "kit.gateway", "--port", "0", "--prices", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr

"""The prices the shipped notebooks trade on when given none: plotly's weekly 2018-2019 sample of six US
stocks (MIT; a copy ships in kit/samples, so a core install needs no plotly), scaled from plotly's 1.0 on
2018-01-01 to that week's closes.

One place for them, because two programs must agree on them: notebooks/momentum.ipynb decides at these
prices, and `make demo-ib` has kit's simulated gateway quote the same ones (`python -m kit.sample FILE`
writes them as a CSV that both read), so the demo's slippage is the gateway's spread, not two data sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

FIRST_CLOSE = {"GOOG": 1065.00, "AAPL": 172.26, "AMZN": 1189.01, "FB": 181.42, "NFLX": 201.07, "MSFT": 85.95}


def sample_prices() -> pd.DataFrame:
    """Weekly closes indexed by date, one column per symbol."""
    sample = Path(__file__).parent / "samples" / "stocks.csv"
    prices = pd.read_csv(sample, parse_dates=["date"]).set_index("date")
    return prices * pd.Series(FIRST_CLOSE)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("kit: usage: python -m kit.sample FILE.csv")
    Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
    sample_prices().to_csv(sys.argv[1])

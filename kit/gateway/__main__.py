"""``python -m kit.gateway`` / ``kit gateway``: serve a simulated IB Gateway until interrupted.

Prints ``kit gateway listening on HOST:PORT`` once it accepts connections, so a parent process can wait for
that line (``--port 0`` picks a free port and the line says which).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import logging
import signal
import sys

from kit.errors import ConfigError, UsageError
from kit.gateway.config import GatewayConfig
from kit.gateway.instruments import Instrument, round_price
from kit.gateway.server import Gateway


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The gateway's options; a bad one raises kit.errors.UsageError (`kit: <message>`, exit 2)."""
    from kit.cli import Parser  # kit's parser class; kit.cli imports the gateway only when it runs

    parser = Parser(prog="kit gateway", description="Run kit's simulated IB Gateway.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4002, help="0 picks a free port (default 4002)")
    parser.add_argument("--seed", type=int, help="seed of the fill model (default 0, or the config's)")
    parser.add_argument("--accounts", help="comma-separated managed accounts, e.g. DU1234567,DU7654321")
    parser.add_argument("--config", help="TOML file of gateway settings (see docs/gateway.md)")
    parser.add_argument("--prices", help="CSV of prices to quote: a date column and one column per symbol "
                                         "(a notebook's prices file); the last price of each symbol is used")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> GatewayConfig:
    config = GatewayConfig.from_file(args.config) if args.config else GatewayConfig()
    changes: dict[str, object] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.accounts is not None:
        changes["accounts"] = tuple(a.strip() for a in args.accounts.split(",") if a.strip())
    if args.prices is not None:
        changes["instruments"] = priced(config.instruments, last_prices(args.prices))
    return dataclasses.replace(config, **changes)


def last_prices(path: str) -> dict[str, float]:
    """The last price of each symbol column of a prices CSV (rows oldest first; empty cells skipped), so
    the gateway quotes what the notebook that reads the same file decides on."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    prices: dict[str, float] = {}
    for row in rows:
        for symbol, text in row.items():
            if symbol != "date" and text not in ("", None):
                try:
                    prices[symbol] = float(text)
                except ValueError:
                    raise ConfigError(f"{path}: {symbol} has a price that is not a number: "
                                      f"{text!r}") from None
    if not prices:
        raise ConfigError(f"{path}: no prices (expected a date column and one column per symbol)")
    return prices


def priced(instruments: tuple[Instrument, ...], prices: dict[str, float]) -> tuple[Instrument, ...]:
    """The instrument table at these prices; a symbol the table does not have is left out (IB would not
    know it either) and said on stderr."""
    known = {inst.symbol for inst in instruments}
    if unknown := sorted(set(prices) - known):
        print(f"kit gateway: no instrument for {', '.join(unknown)} in the table; not quoted",
              file=sys.stderr)
    for symbol, price in prices.items():
        if symbol in known and not price > 0:
            raise ConfigError(f"the price of {symbol} must be positive, got {price}")
    return tuple(dataclasses.replace(inst, price=round_price(prices[inst.symbol], inst))
                 if inst.symbol in prices else inst for inst in instruments)


async def serve(config: GatewayConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection and return."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    gateway = Gateway(config)
    async with gateway.serving(host, port):
        print(f"kit gateway listening on {gateway.host}:{gateway.port}", flush=True)
        await stopped.wait()


def main(argv: list[str] | None = None) -> int:
    """Errors are kit's: `kit: <message>`, exit 2 for what the user gave (options, config, prices)."""
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"kit: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = build_config(args)
    except (OSError, ValueError, TypeError, ConfigError) as exc:
        print(f"kit: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, args.host, args.port))
    except OSError as exc:  # e.g. the port is taken
        print(f"kit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

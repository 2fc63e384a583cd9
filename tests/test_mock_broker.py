"""The mock broker: fills at reference prices, partial fills, rejections, limit orders, commissions, prices.

Driven through kit.execute (the engine follows the broker's events) or, for the broker's own protocol,
through its event sink. Scenario scripts move the market on the broker's own events, never on a timer.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pandas as pd
import pytest

import kit
from kit.brokers.mock import CommissionModel, MockBroker, reference_prices
from kit.model import (
    Accepted,
    BrokerNotice,
    Cancelled,
    Commission,
    Execution,
    Order,
    OrderIntent,
    Rejected,
    Side,
)

PRICES = {"AAPL": 190.0, "MSFT": 410.0, "TTE": 61.5}


def orders(*rows: tuple) -> pd.DataFrame:
    """(symbol, side, quantity[, limit_price]) rows; a limit price makes it an LMT order."""
    frame = pd.DataFrame([{"symbol": r[0], "side": r[1], "quantity": r[2],
                           "order_type": "LMT" if len(r) > 3 else "MKT",
                           "limit_price": r[3] if len(r) > 3 else None} for r in rows])
    return frame


class MarketMover(MockBroker):
    """Moves prices the moment an order is acknowledged: a market that moves while the order rests."""

    def __init__(self, *args, moves: list[tuple[str, float]], **kwargs):
        super().__init__(*args, **kwargs)
        self.moves = list(moves)

    def emit(self, event):
        super().emit(event)
        if isinstance(event, Accepted):
            moves, self.moves = self.moves, []
            for symbol, price in moves:
                self.set_price(symbol, price)


def by_symbol(run) -> dict[str, pd.Series]:
    return {row["symbol"]: row for _, row in run.orders.iterrows()}


# ---- market orders, partial fills, rejections ----------------------------------------------------------


def test_market_orders_fill_at_the_reference_price_with_commission(db):
    run = kit.execute(orders(("AAPL", "BUY", 100), ("MSFT", "SELL", 30)), prices=PRICES, run_key="k", db=db,
                      timeout=5)
    assert run.status == "done"
    rows = by_symbol(run)
    assert rows["AAPL"]["status"] == "FILLED" and rows["AAPL"]["avg_fill_price"] == 190.0
    assert rows["MSFT"]["filled_quantity"] == 30 and rows["MSFT"]["remaining_quantity"] == 0
    assert run.fills.set_index("symbol")["price"].to_dict() == {"AAPL": 190.0, "MSFT": 410.0}
    # IB-like fixed pricing: 100 x 0.005 = 0.50 -> the 1.00 minimum
    assert run.fills.set_index("symbol")["commission"].to_dict() == {"AAPL": 1.0, "MSFT": 1.0}
    assert rows["AAPL"]["broker_order_id"] and rows["AAPL"]["perm_id"]


def test_partial_fills_add_up_to_the_order(db):
    broker = MockBroker(prices=PRICES, partial_fills=4)
    run = kit.execute(orders(("AAPL", "BUY", 1000)), broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done"
    assert len(run.fills) == 4 and run.fills["exec_id"].is_unique
    assert run.fills["quantity"].sum() == 1000 and (run.fills["quantity"] > 0).all()
    order = run.orders.iloc[0]
    assert order["status"] == "FILLED" and order["avg_fill_price"] == 190.0
    assert order["commission"] == pytest.approx(run.fills["commission"].sum())
    events = kit.ledger(db).events(run.run_id)
    statuses = events.loc[events["kind"] == "fill", "status"].tolist()
    assert statuses == ["PARTIAL", "PARTIAL", "PARTIAL", "FILLED"]


def test_a_quantity_is_never_split_into_more_pieces_than_shares(db):
    broker = MockBroker(prices=PRICES, partial_fills=10)
    run = kit.execute(orders(("AAPL", "BUY", 3)), broker=broker, run_key="k", db=db, timeout=5)
    assert run.fills["quantity"].tolist() == [1.0, 1.0, 1.0]


def fills_of(seed: int, db, run_key: str) -> list[tuple]:
    broker = MockBroker(prices=PRICES, partial_fills=(1, 6), seed=seed)
    targets = orders(*[(s, "BUY", 500) for s in PRICES])
    run = kit.execute(targets, broker=broker, run_key=run_key, db=db, timeout=5)
    return sorted(zip(run.fills["client_order_id"], run.fills["exec_id"], run.fills["quantity"],
                      run.fills["price"], strict=True))


def test_the_same_seed_prices_and_orders_give_the_same_executions(tmp_path):
    first = fills_of(7, tmp_path / "a.duckdb", "k")
    assert fills_of(7, tmp_path / "b.duckdb", "k") == first
    assert fills_of(8, tmp_path / "c.duckdb", "k") != first


def test_a_symbol_without_a_price_is_rejected_and_the_run_is_partial(db):
    broker = MockBroker(prices=PRICES)
    run = kit.execute(orders(("AAPL", "BUY", 10), ("ZZZZ", "BUY", 10)), broker=broker, run_key="k", db=db,
                      timeout=5)
    assert run.status == "partial"
    rejected = by_symbol(run)["ZZZZ"]
    assert rejected["status"] == "REJECTED" and rejected["reason"] == "price_unavailable"
    assert rejected["filled_quantity"] == 0 and rejected["remaining_quantity"] == 0
    assert list(run.fills["symbol"]) == ["AAPL"]


def test_a_run_where_everything_is_rejected_failed(db):
    run = kit.execute(orders(("ZZZZ", "BUY", 10), ("YYYY", "SELL", 5)), prices=PRICES, run_key="k", db=db,
                      timeout=5)
    assert run.status == "failed"
    assert set(run.orders["status"]) == {"REJECTED"}
    assert kit.ledger(db).runs().set_index("run_id").loc[run.run_id, "status"] == "failed"


# ---- limit orders -----------------------------------------------------------------------------------------


def test_a_marketable_limit_order_fills_at_the_reference_price(db):
    run = kit.execute(orders(("AAPL", "BUY", 10, 200.0), ("MSFT", "SELL", 10, 400.0)), prices=PRICES,
                      run_key="k", db=db, timeout=5)
    assert run.status == "done"
    assert run.fills.set_index("symbol")["price"].to_dict() == {"AAPL": 190.0, "MSFT": 410.0}


def test_a_limit_order_the_price_does_not_reach_is_cancelled_at_the_timeout(db):
    run = kit.execute(orders(("AAPL", "BUY", 10), ("MSFT", "BUY", 10, 400.0)), prices=PRICES, run_key="k",
                      db=db, timeout=0.5, on_timeout="cancel")
    assert run.status == "partial"
    lmt = by_symbol(run)["MSFT"]
    assert lmt["status"] == "CANCELLED" and lmt["filled_quantity"] == 0 and lmt["remaining_quantity"] == 0
    assert any("cancelled" in note for note in run.notes)
    events = kit.ledger(db).events(run.run_id)
    kinds = events.loc[events["client_order_id"] == lmt["client_order_id"], "kind"].tolist()
    assert kinds.index("cancel_requested") < kinds.index("cancelled")


def test_a_limit_order_left_working_at_the_timeout_says_so(db):
    broker = MockBroker(prices=PRICES)
    run = kit.execute(orders(("MSFT", "SELL", 10, 420.0)), broker=broker, run_key="k", db=db, timeout=0.3,
                      on_timeout="leave")
    lmt = run.orders.iloc[0]
    assert lmt["status"] == "SUBMITTED" and lmt["remaining_quantity"] == 10
    assert run.status == "failed"  # nothing filled
    assert any("left working" in note and "on_timeout='leave'" in note for note in run.notes)
    events = kit.ledger(db).events(run.run_id)
    assert "left_working" in events["kind"].tolist() and "cancel_requested" not in events["kind"].tolist()
    assert not broker.orders[lmt["client_order_id"]].cancelled  # still resting at the broker


@pytest.mark.parametrize("side,limit,move_to", [("BUY", 185.0, 184.0), ("SELL", 195.0, 196.0)])
def test_a_resting_limit_order_fills_when_the_price_reaches_the_limit(db, side, limit, move_to):
    broker = MarketMover(prices=PRICES, moves=[("AAPL", move_to)], partial_fills=3)
    run = kit.execute(orders(("AAPL", side, 90, limit)), broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done"
    assert run.fills["quantity"].sum() == 90
    assert set(run.fills["price"]) == {move_to}


@pytest.mark.parametrize("side,limit,path", [
    ("BUY", 185.0, [184.0, 191.0]),  # touches the limit, then runs away before the fill
    ("SELL", 195.0, [196.0, 189.0]),
])
def test_a_limit_order_never_fills_through_its_limit(db, side, limit, path):
    broker = MarketMover(prices=PRICES, moves=[("AAPL", p) for p in path])
    run = kit.execute(orders(("AAPL", side, 90, limit)), broker=broker, run_key="k", db=db, timeout=0.3)
    prices = run.fills["price"]
    assert (prices <= limit).all() if side == "BUY" else (prices >= limit).all()
    assert run.fills.empty and run.orders.iloc[0]["status"] == "CANCELLED"


def test_a_price_that_moves_twice_through_the_limit_fills_the_order_once(db):
    broker = MarketMover(prices=PRICES, moves=[("AAPL", 184.0), ("AAPL", 183.0)], partial_fills=2)
    run = kit.execute(orders(("AAPL", "BUY", 50, 185.0)), broker=broker, run_key="k", db=db, timeout=5)
    assert run.status == "done"
    assert len(run.fills) == 2 and run.fills["quantity"].sum() == 50
    assert (run.fills["price"] <= 185.0).all()
    working = next(iter(broker.orders.values()))
    assert working.fills_sent == 2


# ---- the broker's own protocol -------------------------------------------------------------------------


def intent(symbol="AAPL", side=Side.BUY, quantity=10.0, **extra) -> OrderIntent:
    return OrderIntent(client_order_id=f"k-{symbol}-{side}", symbol=symbol, side=side, quantity=quantity,
                       **extra)


async def session(broker: MockBroker, script, count: int) -> list:
    """Connect, run `script(broker)`, and collect the next `count` events the broker pushes."""
    queue: asyncio.Queue = asyncio.Queue()
    broker.bind(queue.put_nowait)
    await broker.connect()
    try:
        await script(broker)
        return [await asyncio.wait_for(queue.get(), 2) for _ in range(count)]
    finally:
        await broker.close()


def test_the_broker_pushes_ack_fill_and_commission_events():
    async def script(broker):
        await broker.submit(intent())

    events = asyncio.run(session(MockBroker(prices=PRICES), script, 3))
    assert [type(e) for e in events] == [Accepted, Execution, Commission]
    assert events[1].fill.quantity == 10 and events[1].fill.price == 190.0
    assert events[2].exec_id == events[1].fill.exec_id and events[2].commission == 1.0


def test_a_cancel_is_confirmed_only_for_a_working_order():
    async def script(broker):
        await broker.submit(intent(order_type="LMT", limit_price=100.0))
        await broker.cancel("k-AAPL-BUY")
        await broker.cancel("k-AAPL-BUY")
        await broker.cancel("never-sent")

    events = asyncio.run(session(MockBroker(prices=PRICES), script, 4))
    assert [type(e) for e in events] == [Accepted, Cancelled, BrokerNotice, BrokerNotice]
    assert events[1].client_order_id == "k-AAPL-BUY"
    assert [e.code for e in events[2:]] == ["not_working", "not_working"]


def test_sync_replays_what_the_broker_did_and_knows_only_its_own_orders():
    broker = MockBroker(prices=PRICES, partial_fills=2)

    async def first(broker):
        await broker.submit(intent())

    asyncio.run(session(broker, first, 5))  # ack, 2 x (fill + commission)
    known_order = Order(intent(), "r", datetime(2026, 1, 1), datetime(2026, 1, 1))
    unknown_order = Order(intent("MSFT"), "r", datetime(2026, 1, 1), datetime(2026, 1, 1))
    answer: dict = {}

    async def resume(broker):
        answer["known"] = await broker.sync([known_order, unknown_order])

    replayed = asyncio.run(session(broker, resume, 5))
    assert answer["known"] == {"k-AAPL-BUY"}
    assert [type(e) for e in replayed] == [Accepted, Execution, Commission, Execution, Commission]
    assert sum(e.fill.quantity for e in replayed if isinstance(e, Execution)) == 10


def test_a_rejected_order_is_rejected_before_anything_else():
    async def script(broker):
        await broker.submit(intent("ZZZZ"))

    events = asyncio.run(session(MockBroker(prices=PRICES), script, 1))
    assert isinstance(events[0], Rejected) and events[0].reason == "price_unavailable"


def test_moving_the_price_between_sessions_fills_a_resting_order_in_the_next_one():
    broker = MockBroker(prices=PRICES)

    async def rest(broker):
        await broker.submit(intent(order_type="LMT", limit_price=180.0))

    assert [type(e) for e in asyncio.run(session(broker, rest, 1))] == [Accepted]
    broker.set_price("AAPL", 179.0)  # no session connected: the market moves, nothing can fill yet
    assert broker.reference_price("AAPL") == 179.0

    async def nothing(broker):
        return None

    events = asyncio.run(session(broker, nothing, 2))
    assert [type(e) for e in events] == [Execution, Commission]
    assert (events[0].fill.quantity, events[0].fill.price) == (10, 179.0)


# ---- commissions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity,price,expected", [
    (100, 190.0, 1.0),  # 0.50 per share fee is under the 1.00 minimum
    (1000, 50.0, 5.0),  # 1000 x 0.005
    (10, 0.5, 0.05),  # capped at 1% of the 5.00 notional
    (200_000, 10.0, 1000.0),
])
def test_the_commission_model_has_a_floor_and_a_cap(quantity, price, expected):
    assert CommissionModel()(quantity, price) == pytest.approx(expected)


def test_a_custom_commission_model_is_used_for_every_fill(db):
    broker = MockBroker(prices=PRICES, partial_fills=2,
                        commission=CommissionModel(per_share=0.01, minimum=0.0, maximum_rate=1.0))
    run = kit.execute(orders(("AAPL", "BUY", 100)), broker=broker, run_key="k", db=db, timeout=5)
    assert run.fills["commission"].tolist() == pytest.approx([q * 0.01 for q in run.fills["quantity"]])
    assert run.orders.iloc[0]["commission"] == pytest.approx(1.0)

    flat = MockBroker(prices=PRICES, commission=lambda quantity, price: 2.5)
    run = kit.execute(orders(("MSFT", "BUY", 7)), broker=flat, run_key="k2", db=db, timeout=5)
    assert run.fills["commission"].tolist() == [2.5]


# ---- reference prices -------------------------------------------------------------------------------------


def test_prices_from_a_dict_or_a_series():
    assert reference_prices({"AAPL": 190}) == {"AAPL": 190.0}
    assert reference_prices(pd.Series({"AAPL": 190.5, "TTE": 61})) == {"AAPL": 190.5, "TTE": 61.0}
    assert reference_prices(None) == {}


def test_prices_from_a_wide_frame_take_the_last_valid_row():
    wide = pd.DataFrame({"AAPL": [189.0, 190.0, 191.0], "MSFT": [405.0, 410.0, None], "TTE": [None] * 3},
                        index=pd.date_range("2026-11-18", periods=3))
    assert reference_prices(wide) == {"AAPL": 191.0, "MSFT": 410.0}


def test_prices_from_a_wide_frame_with_a_date_column_and_whole_prices():
    wide = pd.DataFrame({"date": ["2026-11-19", "2026-11-20"], "AAPL": [190, 191], "TTE": [61.0, 62.5]})
    assert reference_prices(wide) == {"AAPL": 191.0, "TTE": 62.5}


def test_prices_from_a_long_frame_take_the_last_row_per_symbol():
    long = pd.DataFrame({"date": ["d1", "d1", "d2", "d2"], "symbol": ["AAPL", "MSFT", "AAPL", "MSFT"],
                         "price": [189.0, 405.0, 191.0, None]})
    assert reference_prices(long) == {"AAPL": 191.0, "MSFT": 405.0}


@pytest.mark.parametrize("prices", [
    {"AAPL": 191.0},
    pd.DataFrame({"AAPL": [150.0, 191.0]}),
    pd.DataFrame({"symbol": ["AAPL", "AAPL"], "price": [150.0, 191.0]}),
], ids=["dict", "wide", "long"])
def test_execute_takes_prices_in_any_of_the_three_shapes(db, prices):
    run = kit.execute(orders(("AAPL", "BUY", 10)), prices=prices, run_key="k", db=db, timeout=5)
    assert run.status == "done"
    assert run.fills["price"].tolist() == [191.0]
    assert run.orders.iloc[0]["arrival_price"] == 191.0


def test_latency_delays_the_fills(db):
    broker = MockBroker(prices=PRICES, latency=0.05, partial_fills=2)
    run = kit.execute(orders(("AAPL", "BUY", 10)), broker=broker, run_key="k", db=db, timeout=5)
    submitted = run.orders.iloc[0]["submitted_at"]
    delays = sorted((run.fills["time"] - submitted).dt.total_seconds())
    assert delays[0] >= 0.04 and delays[1] >= 0.09

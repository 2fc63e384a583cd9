"""The faster write path keeps the ledger's rules: sums that follow every change of an order's fills, audit
text as json.dumps gives it, and a batch written twice (or holding an event the ledger has) landing once."""

from __future__ import annotations

import copy
import json
import math
import pickle
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kit.model import Fill, Order, OrderIntent, Side
from kit.recorder import _detail_json, event_row, fill_row, order_row
from kit.store import Batch, Ledger

T0 = datetime(2026, 12, 1, 15, 30)


def an_order(coid: str = "k-AAPL-BUY", quantity: float = 100) -> Order:
    return Order(OrderIntent(coid, "AAPL", Side.BUY, quantity), "r1", T0, T0)


def sums(order: Order) -> tuple:
    """What the order's figures must be, computed from scratch."""
    fills = list(order.fills.values())
    filled = math.fsum(f.quantity for f in fills)
    known = all(f.commission_known for f in fills)
    commission = math.fsum(f.commission for f in fills) if known else math.nan
    return filled, known, commission


changes = st.lists(st.tuples(
    st.sampled_from(["set", "delete", "pop", "update", "clear", "copy", "pickle"]),
    st.sampled_from(["a", "b", "c"]),
    st.integers(1, 50),
    st.one_of(st.none(), st.just(math.nan), st.floats(0, 5, allow_nan=False))), max_size=30)


@given(changes)
def test_an_orders_sums_follow_every_change_of_its_fills(steps):
    order = an_order()
    for n, (how, key, quantity, commission) in enumerate(steps):
        fill = Fill(f"{key}.{n}", order.client_order_id, float(quantity), 10.0 + n, T0 + timedelta(seconds=n),
                    commission=commission)
        if how == "set":
            order.fills[key] = fill
        elif how == "delete" and key in order.fills:
            del order.fills[key]
        elif how == "pop":
            order.fills.pop(key, None)
        elif how == "update":
            order.fills.update({key: fill})
        elif how == "clear":
            order.fills.clear()
        elif how == "copy":
            order = copy.deepcopy(order)
        elif how == "pickle":
            order = pickle.loads(pickle.dumps(order))
        filled, known, commission = sums(order)
        assert order.filled_quantity == filled
        assert order.remaining_quantity == max(order.intent.quantity - filled, 0.0)
        assert order.settled == (filled >= order.intent.quantity and known)
        assert (math.isnan(order.commission) and math.isnan(commission)) or order.commission == commission
        assert order_row(order)["filled_quantity"] == filled


def test_a_plain_dict_put_in_place_of_the_fills_is_summed_every_time():
    order = an_order()
    order.fills = {"a": Fill("a.1", order.client_order_id, 30.0, 10.0, T0)}
    assert order.filled_quantity == 30
    order.fills["b"] = Fill("b.1", order.client_order_id, 20.0, 10.0, T0)
    assert order.filled_quantity == 50


details = st.dictionaries(st.text(max_size=8), st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.datetimes(),
    st.lists(st.integers(), max_size=3)), max_size=6)


@given(details)
def test_the_audit_detail_is_the_text_json_dumps_gives(detail):
    assert _detail_json(detail) == json.dumps(detail, default=str)


def test_a_batch_written_twice_lands_once(tmp_path):
    order = an_order()
    order.fills["x"] = fill = Fill("x.01", order.client_order_id, 40.0, 10.0, T0, commission=1.0)

    def batch(*event_ids: str) -> Batch:
        return Batch(events=[event_row(e, "r1", order.client_order_id, n, T0, "fill", "PARTIAL", {"n": n})
                             for n, e in enumerate(event_ids, start=1)],
                     orders={order.client_order_id: order_row(order)},
                     fills={fill.exec_id: fill_row(order, fill)})

    with Ledger(tmp_path / "kit.duckdb") as ledger:
        assert ledger.write(batch("e1", "e2"))
        assert ledger.write(batch("e1", "e2"))  # a journal replayed again, say
        assert ledger.write(batch("e2", "e3"))  # one event known, one new: the new one lands
        assert ledger.events()["event_id"].tolist() == ["e1", "e2", "e3"]
        assert ledger.fills()["exec_id"].tolist() == ["x.01"]
        orders = ledger.orders()
        assert orders["client_order_id"].tolist() == [order.client_order_id]
        assert orders["filled_quantity"].tolist() == [40.0]


def test_one_order_row_replaced_in_place_keeps_nan_as_null(tmp_path):
    order = an_order()
    with Ledger(tmp_path / "kit.duckdb") as ledger:
        ledger.write(Batch(orders={order.client_order_id: order_row(order)}))
        order.fills["x"] = Fill("x.01", order.client_order_id, 100.0, 10.0, T0, commission=math.nan)
        order.status = order.status.FILLED
        ledger.write(Batch(orders={order.client_order_id: order_row(order)}))
        row = ledger.con.execute("SELECT status, filled_quantity, commission IS NULL FROM orders").fetchall()
    assert row == [("FILLED", 100.0, True)]

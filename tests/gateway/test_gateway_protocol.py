"""The wire layer without sockets: frames, handshake, requests as the real ib_async Client encodes them,
and messages as the real ib_async Decoder reads them."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from ib_async import ExecutionFilter, LimitOrder, MarketOrder, Stock
from ib_async.client import Client
from ib_async.decoder import Decoder

from kit.gateway import messages as m
from kit.gateway.config import GatewayConfig
from kit.gateway.instruments import ContractSpec, Market
from kit.gateway.protocol import (
    ProtocolError,
    RequestError,
    encode,
    format_time,
    frame,
    parse_exec_filter,
    parse_mkt_data,
    parse_place_order,
    parse_time,
    read_handshake,
    read_message,
)
from kit.gateway.state import Book, OrderRequest

NOW = datetime(2026, 11, 21, 14, 30, tzinfo=UTC)


class Recorder:
    """Stands in for ib_async's Wrapper: records every call the Decoder makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.ib = SimpleNamespace(TimezoneTWS=None)
        self.defaultTimezone = UTC

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, args))


def decode(msg: m.Message, version: int = 178) -> tuple[str, tuple[Any, ...]]:
    """What the real ib_async Decoder makes of the message, laid out for and read at a server version."""
    recorder = Recorder()
    Decoder(recorder, version).interpret(msg.wire(version))
    [call] = recorder.calls
    return call


def encoded(request: str, *args: Any, version: int = 178) -> list[str]:
    """The fields the real ib_async Client sends for a request at a server version."""
    sent: list[str] = []
    client = Client(Recorder())
    client.connState, client._serverVersion = Client.CONNECTED, version
    client.sendMsg = sent.append
    getattr(client, request)(*args)
    [msg] = sent
    return msg.split("\0")[:-1]


def read(read_fn: Any, data: bytes) -> Any:
    """Run a stream-reading coroutine function over the given bytes."""

    async def go() -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_fn(reader)

    return asyncio.run(go())


def filled_order(**request: Any):
    cfg = GatewayConfig(partial_fills=1)
    book = Book(cfg, Market(cfg.instruments), lambda: NOW)
    req = OrderRequest(7, ContractSpec(symbol="AAPL", exchange="SMART"), "BUY", 10, "MKT", **request)
    order = book.place(3, req)
    return book, order, book.fill_next(order.perm_id)


def test_frames_and_fields_round_trip():
    fields = [encode(v) for v in (3, "AAPL", None, True, False, 10.0, 189.5, 1.7976931348623157e308)]
    assert fields[:7] == ["3", "AAPL", "", "1", "0", "10", "189.5"]
    assert float(fields[7]) == 1.7976931348623157e308
    assert read(read_message, frame(fields)) == fields


@pytest.mark.parametrize(
    ("offer", "version"),
    [(b"v157..178", 178), (b"v157..176", 176), (b"v176", 176), (b"v100..157", 157), (b"v100..226", 178),
     (b"v100..163 +PACEAPI", 163)],
)  # fmt: skip
def test_handshake_announces_the_lower_of_the_client_max_and_178(offer, version):
    """As IB does: ibapi 9.81 (v100..157) is served at 157, ib_insync at 176, ib_async and 10.x at 178."""
    data = b"API\0" + struct.pack(">I", len(offer)) + offer
    assert read(read_handshake, data) == version


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n", b"API\0\0\0\0\x09v100..150", b"API\0\0\0\0\x09v100..156", b"API\0\0\0\0\x03abc"],
)
def test_handshake_turns_away_what_it_cannot_serve(data):
    with pytest.raises(ProtocolError):
        read(read_handshake, data)


def test_oversized_frames_are_refused():
    with pytest.raises(ProtocolError):
        read(read_message, struct.pack(">I", 1 << 30))


def test_place_order_as_ib_async_encodes_it():
    order = LimitOrder("SELL", 25, 61.5, tif="GTC", account="DU7", orderRef="run-TTE-SELL", transmit=False)
    for version in (176, 178):
        tte = Stock("TTE", "SBF", "EUR", primaryExchange="SBF")
        fields = encoded("placeOrder", 42, tte, order, version=version)
        assert parse_place_order(fields, version) == OrderRequest(
            42, ContractSpec(0, "TTE", "STK", "SBF", "SBF", "EUR"), "SELL", 25.0, "LMT", 61.5, "GTC", "DU7",
            "run-TTE-SELL", False,
        )  # fmt: skip
    market = parse_place_order(
        encoded("placeOrder", 43, Stock("AAPL", "SMART", "USD"), MarketOrder("BUY", 3))
    )
    assert (market.order_type, market.limit_price, market.quantity, market.transmit) == (
        "MKT",
        None,
        3.0,
        True,
    )


def test_exec_filter_and_market_data_requests_as_ib_async_encodes_them():
    req_id, flt = parse_exec_filter(
        encoded(
            "reqExecutions",
            9,
            ExecutionFilter(clientId=4, symbol="AAPL", side="BUY", time="20261121-14:00:00"),
        )
    )
    assert (req_id, flt.client_id, flt.symbol, flt.side) == (9, 4, "AAPL", "BUY")
    assert flt.since == datetime(2026, 11, 21, 14, tzinfo=UTC)
    with pytest.raises(RequestError) as bad:
        parse_exec_filter(encoded("reqExecutions", 9, ExecutionFilter(time="yesterday")))
    assert (bad.value.req_id, bad.value.code) == (9, 321)
    req_id, spec, snapshot = parse_mkt_data(
        encoded("reqMktData", 5, Stock("XOM", "SMART", "USD"), "", True, False, [])
    )
    assert (req_id, spec.symbol, snapshot) == (5, "XOM", True)


def test_parse_time_formats():
    assert parse_time("20261121 09:30:00 US/Eastern") == datetime(2026, 11, 21, 14, 30, tzinfo=UTC)
    assert parse_time("20261121-14:30:00") == NOW


@pytest.mark.parametrize(("version", "count"), [(176, 128), (178, 127)])
def test_open_order_and_order_status_decode(version, count):
    """No faProfile since 177."""
    _, order, _ = filled_order(order_ref="ref-1", account="DU1234567")
    name, (order_id, contract, decoded, state) = decode(m.open_order(order), version)
    assert name == "openOrder" and len(m.open_order(order).wire(version)) == count
    assert (order_id, decoded.permId, decoded.clientId, decoded.orderRef) == (7, order.perm_id, 3, "ref-1")
    assert (decoded.totalQuantity, decoded.orderType, state.status) == (10, "MKT", "Filled")
    assert (contract.conId, contract.symbol, contract.exchange) == (265598, "AAPL", "SMART")
    name, args = decode(m.order_status(order), version)
    assert name == "orderStatus"
    assert args[:6] == (7, "Filled", 10.0, 0.0, order.avg_fill_price, order.perm_id) and args[8] == 3


@pytest.mark.parametrize(("version", "count"), [(176, 97), (178, 96)])
def test_completed_order_decodes_with_perm_id_and_order_ref(version, count):
    _, order, _ = filled_order(order_ref="ref-2")
    msg = m.completed_order(order, "20261121 14:30:00 UTC")
    name, (_, decoded, state) = decode(msg, version)
    assert name == "completedOrder" and len(msg.wire(version)) == count
    assert (decoded.orderId, decoded.permId, decoded.orderRef) == (0, order.perm_id, "ref-2")
    assert (state.status, state.completedStatus, decoded.filledQuantity) == ("Filled", "Filled", 10)
    assert state.completedTime == "20261121 14:30:00 UTC"


@pytest.mark.parametrize(("version", "count"), [(176, 31), (178, 32)])
def test_execution_and_commission_decode(version, count):
    """pendingPriceRevision ends execDetails since 178: without it ib_async drops every fill there."""
    _, order, execution = filled_order(order_ref="ref-3")
    msg = m.exec_details(-1, execution, format_time(execution.time))
    name, (req_id, _, ex) = decode(msg, version)
    assert name == "execDetails" and len(msg.wire(version)) == count and req_id == -1
    assert (ex.execId, ex.permId, ex.orderRef, ex.clientId, ex.orderId) == (
        execution.exec_id, order.perm_id, "ref-3", 3, 7,
    )  # fmt: skip
    assert (ex.side, ex.shares, ex.price, ex.time) == ("BOT", 10, execution.price, NOW)
    msg = m.commission_report(execution)
    name, (report,) = decode(msg, version)
    assert name == "commissionReport" and len(msg.wire(version)) == 8
    assert (report.execId, report.commission, report.currency) == (execution.exec_id, 1.0, "USD")


@pytest.mark.parametrize(("version", "count"), [(157, 39), (163, 40), (164, 40), (178, 40)])
def test_contract_details_position_and_portfolio_decode(version, count):
    """Until 163 contractDetails carries a version field and mdSizeMultiplier; sizes since 164."""
    book, order, _ = filled_order()
    msg = m.contract_details(1, order.instrument, "SMART")
    name, (_, details) = decode(msg, version)
    assert name == "contractDetails" and len(msg.wire(version)) == count
    assert (details.contract.primaryExchange, details.longName, details.minTick) == (
        "NASDAQ",
        "APPLE INC",
        0.01,
    )
    [position] = book.positions()
    name, (account, contract, quantity, avg_cost) = decode(m.position(position))
    assert (name, account, contract.conId, quantity) == ("position", "DU1234567", 265598, 10)
    assert avg_cost == position.avg_cost
    name, args = decode(m.portfolio(position, 191.0))
    assert (name, args[1], args[2], args[-1]) == ("updatePortfolio", 10, 191.0, "DU1234567")


def test_error_carries_the_advanced_reject_field_since_166():
    msg = m.error(5, 201, "Order rejected")
    assert decode(msg) == ("error", (5, 201, "Order rejected", ""))
    assert len(msg.wire(165)) == 5 and len(msg.wire(166)) == 6
    assert decode(msg, 157) == ("error", (5, 201, "Order rejected", ""))

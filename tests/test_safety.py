"""The safety switches: dry run, live-account approval, the halt switch and the kill switch (on the mock
broker; the simulated gateway's kill switch is tested with the gateway), and how a plan shows itself."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import kit
import kit.api
from kit.brokers.mock import MockBroker
from kit.cli import main
from kit.errors import HaltedError, KitError, LiveAccountError

PRICES = {"AAPL": 200.0, "MSFT": 400.0, "TSLA": 250.0}
pytestmark = pytest.mark.usefixtures("clean_config")


class LiveMock(MockBroker):
    """The mock broker pretending to be a real-money account."""

    is_paper = False
    account = "U1234567"


def buys(**quantities: int) -> pd.DataFrame:
    return pd.DataFrame({"symbol": list(quantities), "side": "BUY", "quantity": list(quantities.values())})


def resting(symbol: str = "MSFT", limit: float = 300.0, quantity: int = 10) -> pd.DataFrame:
    """A buy limit under the market: it rests at the broker and never fills."""
    return pd.DataFrame({"symbol": [symbol], "side": "BUY", "quantity": [quantity], "order_type": "LMT",
                         "limit_price": [limit]})


def events(db: Path, run_key: str) -> pd.DataFrame:
    ledger = kit.ledger(db)
    return ledger.events(ledger.resolve_run(run_key))


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- dry run -----------------------------------------------------------------------------------------
def test_a_dry_run_records_the_plan_with_estimates_sends_nothing_then_runs_for_real_once(db):
    broker = MockBroker(prices=PRICES)
    dry = kit.execute(buys(AAPL=100, MSFT=400), broker=broker, run_key="dry", db=db, dry_run=True)
    assert dry.status == "planned"
    assert broker.submitted == []
    assert dry.orders["status"].tolist() == ["NEW", "NEW"] and dry.orders["submitted_at"].isna().all()
    assert kit.ledger(db).runs().set_index("run_key").loc["dry", "status"] == "planned"
    trail = events(db, "dry")
    what_if = {row.client_order_id: json.loads(row.detail) for row in trail[trail["kind"] == "what_if"]
               .itertuples()}
    assert {coid: (d["commission"], d["notional"]) for coid, d in what_if.items()} == {
        "dry-AAPL-BUY": (1.0, 20_000.0),  # the mock's commission model: 100 x 0.005, at least 1.0
        "dry-MSFT-BUY": (2.0, 160_000.0),
    }

    real = kit.execute(buys(AAPL=100, MSFT=400), broker=broker, run_key="dry", db=db, timeout=5)
    assert real.status == "done"
    assert broker.submitted == ["dry-AAPL-BUY", "dry-MSFT-BUY"]
    kit.execute(buys(AAPL=100, MSFT=400), broker=broker, run_key="dry", db=db, timeout=5)
    assert broker.submitted == ["dry-AAPL-BUY", "dry-MSFT-BUY"]  # never twice


def test_kit_dry_run_in_the_environment_and_an_explicit_false_wins(monkeypatch, db):
    monkeypatch.setenv("KIT_DRY_RUN", "1")
    broker = MockBroker(prices=PRICES)
    assert kit.execute(buys(AAPL=1), broker=broker, run_key="env-dry", db=db).status == "planned"
    assert broker.submitted == []
    run = kit.execute(buys(AAPL=1), broker=broker, run_key="env-dry", db=db, timeout=5, dry_run=False)
    assert run.status == "done" and broker.submitted == ["env-dry-AAPL-BUY"]


def test_a_dry_run_of_target_positions_then_the_real_run_sends_the_planned_orders_once(db):
    broker = MockBroker(prices=PRICES)
    frame = pd.DataFrame({"symbol": ["AAPL", "TSLA"], "target_quantity": [50, -20]})
    kit.execute(frame, broker=broker, run_key="dry-pos", db=db, prices=PRICES, dry_run=True)
    assert broker.submitted == []
    run = kit.execute(frame, broker=broker, run_key="dry-pos", db=db, prices=PRICES, timeout=5)
    assert broker.submitted == ["dry-pos-AAPL-BUY", "dry-pos-TSLA-SELL"]
    assert run.status == "done"
    assert kit.ledger(db).book("mock") == ({"AAPL": 50.0, "TSLA": -20.0}, {})


# ---- live accounts -------------------------------------------------------------------------------------
def test_a_live_account_is_refused_without_kit_allow_live(db):
    broker = LiveMock(prices=PRICES)
    plan = kit.plan(buys(AAPL=10), broker=broker, run_key="live-1", db=db, prices=PRICES)
    with pytest.raises(LiveAccountError, match="account U1234567 is not a paper account; nothing was sent"):
        kit.execute(plan, broker=broker, db=db, approve=plan.hash, timeout=5)
    assert broker.submitted == []
    run = kit.ledger(db).runs().set_index("run_key").loc["live-1"]
    assert run["status"] == "failed" and run["error_name"] == "LiveAccountError"
    assert kit.ledger(db).orders()["submitted_at"].isna().all()


@pytest.mark.parametrize(("approve", "message"), [
    (None, "no approve= given for this plan"),
    ("0123456789abcdef", "approve='0123456789abcdef' does not match this plan"),
])
def test_kit_allow_live_alone_is_not_enough_the_plan_must_be_approved(monkeypatch, db, approve, message):
    monkeypatch.setenv("KIT_ALLOW_LIVE", "1")
    broker = LiveMock(prices=PRICES)
    with pytest.raises(LiveAccountError, match=message):
        kit.execute(buys(AAPL=10), broker=broker, run_key="live-2", db=db, prices=PRICES, approve=approve)
    assert broker.submitted == []


def test_an_approval_does_not_carry_over_to_a_changed_plan(monkeypatch, db):
    monkeypatch.setenv("KIT_ALLOW_LIVE", "1")
    broker = LiveMock(prices=PRICES)
    approved = kit.plan(buys(AAPL=10, MSFT=5), broker=broker, run_key="live-3", db=db, prices=PRICES)
    changed = kit.plan(buys(AAPL=10, MSFT=6), broker=broker, run_key="live-3", db=db, prices=PRICES)
    assert changed.hash != approved.hash
    with pytest.raises(LiveAccountError, match=f"does not match this plan \\(hash {changed.hash}\\)"):
        kit.execute(changed, broker=broker, db=db, approve=approved.hash, timeout=5)
    assert broker.submitted == []

    run = kit.execute(changed, broker=broker, db=db, approve=changed.hash, timeout=5)
    assert run.status == "done"
    assert broker.submitted == ["live-3-AAPL-BUY", "live-3-MSFT-BUY"]
    assert kit.ledger(db).runs().set_index("run_key").loc["live-3", "account"] == "U1234567"


def test_a_changed_risk_verdict_is_a_changed_plan(monkeypatch, db):
    monkeypatch.setenv("KIT_ALLOW_LIVE", "1")
    broker = LiveMock(prices=PRICES)
    approved = kit.plan(buys(AAPL=10, MSFT=5), broker=broker, run_key="live-5", db=db, prices=PRICES)
    stopped = kit.plan(buys(AAPL=10, MSFT=5), broker=broker, run_key="live-5", db=db, prices=PRICES,
                       risk={"max_order_quantity": 5})  # the same orders, but AAPL is now stopped
    assert stopped.intents == approved.intents and stopped.hash != approved.hash
    with pytest.raises(LiveAccountError, match="does not match this plan"):
        kit.execute(stopped, broker=broker, db=db, approve=approved.hash, timeout=5)
    assert broker.submitted == []


def test_a_paper_account_needs_no_approval(db):
    broker = MockBroker(prices=PRICES)
    assert kit.execute(buys(AAPL=1), broker=broker, run_key="paper", db=db, prices=PRICES, timeout=5
                       ).status == "done"


@pytest.mark.parametrize("first", ["refused", "dry run"])
def test_only_the_orders_of_the_approved_plan_reach_a_live_account(monkeypatch, db, first):
    broker = LiveMock(prices=PRICES)
    if first == "refused":
        with pytest.raises(LiveAccountError):
            kit.execute(buys(AAPL=10, MSFT=5), broker=broker, run_key="live-4", db=db, prices=PRICES)
    else:
        kit.execute(buys(AAPL=10, MSFT=5), broker=broker, run_key="live-4", db=db, prices=PRICES,
                    dry_run=True)
    monkeypatch.setenv("KIT_ALLOW_LIVE", "1")
    smaller = kit.plan(buys(AAPL=10), broker=broker, run_key="live-4", db=db, prices=PRICES)
    assert smaller.orders["client_order_id"].tolist() == ["live-4-AAPL-BUY"]
    kit.execute(smaller, broker=broker, db=db, approve=smaller.hash, timeout=5)
    assert broker.submitted == ["live-4-AAPL-BUY"]  # actual: MSFT, never approved, is sent as well


# ---- the halt switch -------------------------------------------------------------------------------------
def test_kit_halt_in_the_environment_stops_submission_and_the_run_resumes_when_cleared(monkeypatch, db):
    monkeypatch.setenv("KIT_HALT", "1")
    broker = MockBroker(prices=PRICES)
    with pytest.raises(HaltedError, match=r"halt switch is on \(KIT_HALT is set\); 2 order\(s\) not sent"):
        kit.execute(buys(AAPL=10, MSFT=5), broker=broker, run_key="halt-env", db=db, timeout=5)
    assert broker.submitted == []
    orders = kit.ledger(db).orders()
    assert orders["status"].tolist() == ["NEW", "NEW"] and orders["submitted_at"].isna().all()
    assert kit.ledger(db).runs().set_index("run_key").loc["halt-env", "status"] == "failed"

    monkeypatch.delenv("KIT_HALT")
    run = kit.execute(buys(AAPL=10, MSFT=5), broker=broker, run_key="halt-env", db=db, timeout=5)
    assert run.status == "done" and broker.submitted == ["halt-env-AAPL-BUY", "halt-env-MSFT-BUY"]


def test_the_halt_file_from_kit_halt_file_stops_submission_with_its_reason(monkeypatch, tmp_path, db):
    flag = tmp_path / "flags" / "HALT"
    monkeypatch.setenv("KIT_HALT_FILE", str(flag))
    flag.parent.mkdir()
    flag.write_text("desk review\n")
    broker = MockBroker(prices=PRICES)
    with pytest.raises(HaltedError, match=f"{flag} exists: desk review"):
        kit.execute(buys(AAPL=10), broker=broker, run_key="halt-file", db=db, timeout=5)
    assert broker.submitted == []


def test_kit_halt_and_kit_halt_clear_on_the_command_line(capsys, tmp_path, db):
    assert cli(capsys, "halt", "--status") == (0, "not halted\n", "")
    code, out, _ = cli(capsys, "halt", "fat", "finger")
    assert code == 0 and "no new order is sent until `kit halt --clear`" in out
    assert (tmp_path / "data" / "HALT").read_text() == "fat finger\n"
    assert cli(capsys, "halt", "--status")[1].endswith("data/HALT exists: fat finger\n")

    broker = MockBroker(prices=PRICES)
    with pytest.raises(HaltedError, match="fat finger"):
        kit.execute(buys(AAPL=10), broker=broker, run_key="halt-cli", db=db, timeout=5)
    assert broker.submitted == []

    code, out, _ = cli(capsys, "halt", "--clear")
    assert code == 0 and "halt switch cleared" in out
    assert not (tmp_path / "data" / "HALT").exists()
    assert kit.execute(buys(AAPL=10), broker=broker, run_key="halt-cli", db=db, timeout=5).status == "done"
    assert broker.submitted == ["halt-cli-AAPL-BUY"]


def test_kit_halt_clear_says_when_the_environment_still_halts(monkeypatch, capsys):
    monkeypatch.setenv("KIT_HALT", "true")
    code, out, _ = cli(capsys, "halt", "--clear")
    assert code == 1 and out == "still halted: KIT_HALT is set\n"


def test_a_dry_run_is_allowed_while_halted(monkeypatch, db):
    monkeypatch.setenv("KIT_HALT", "1")
    broker = MockBroker(prices=PRICES)
    assert kit.execute(buys(AAPL=10), broker=broker, run_key="halt-dry", db=db, dry_run=True).status == (
        "planned")
    assert broker.submitted == []


# ---- the kill switch --------------------------------------------------------------------------------------
def test_the_kill_switch_cancels_a_runs_working_orders_with_the_brokers_confirmation(monkeypatch, db):
    broker = MockBroker(prices=PRICES)
    frame = pd.concat([resting("MSFT"), buys(AAPL=10)], ignore_index=True)
    run = kit.execute(frame, broker=broker, run_key="kill", db=db, timeout=0.3, on_timeout="leave")
    assert run.orders.set_index("symbol")["status"].to_dict() == {"MSFT": "SUBMITTED", "AAPL": "FILLED"}
    assert any("left working" in note for note in run.notes)
    assert kit.ledger(db).book("mock")[1] == {"MSFT": 10.0}

    monkeypatch.setenv("KIT_HALT", "1")  # the halt switch stops new orders, never a cancel
    [killed] = kit.api.cancel("kill", broker=broker, db=db, timeout=5)
    orders = killed.orders.set_index("symbol")
    assert orders.loc["MSFT", ["status", "remaining_quantity", "filled_quantity"]].tolist() == [
        "CANCELLED", 0, 0]
    assert orders.loc["AAPL", "status"] == "FILLED"
    assert killed.status == "partial"
    kinds = events(db, "kill")["kind"].tolist()
    assert kinds.index("kill_switch") < kinds.index("cancel_requested") < kinds.index("cancelled")
    assert kit.ledger(db).book("mock") == ({"AAPL": 10.0}, {})
    assert broker.submitted == ["kill-MSFT-BUY", "kill-AAPL-BUY"]  # a cancel sends nothing new


def test_the_kill_switch_with_nothing_working_says_so(db):
    broker = MockBroker(prices=PRICES)
    kit.execute(buys(AAPL=10), broker=broker, run_key="calm", db=db, timeout=5)
    [run] = kit.api.cancel("calm", broker=broker, db=db)
    assert run.notes == ["no working orders to cancel"]
    assert run.status == "done"


def test_the_kill_switch_is_kit_cancel():
    assert kit.cancel is kit.api.cancel


def test_kit_cancel_in_a_new_process_is_not_confirmed_by_a_mock_that_never_saw_the_order(capsys, db):
    kit.execute(resting("MSFT"), broker=MockBroker(prices=PRICES), run_key="orphan", db=db, timeout=0.3,
                on_timeout="leave")
    # The command line makes a fresh MockBroker from the run's broker name: it does not know the order.
    code, out, err = cli(capsys, "--db", db, "cancel", "--run", "orphan", "--timeout", "0.3")
    assert code == 1
    assert "1 order(s) still working: the broker has not confirmed their cancel" in err
    assert "orphan-MSFT-BUY: the broker does not list it; not cancelled" in out
    order = kit.ledger(db).orders().iloc[0]
    assert order["status"] == "SUBMITTED" and order["remaining_quantity"] == 10
    assert "unknown_at_broker" in events(db, "orphan")["kind"].tolist()
    assert kit.ledger(db).book("mock")[1] == {"MSFT": 10.0}  # still counted as working


def test_kit_cancel_needs_a_run_or_all(capsys, db):
    code, _, err = cli(capsys, "--db", db, "cancel")
    assert code == 2 and "--run RUN or --all" in err


# ---- bad arguments ----------------------------------------------------------------------------------------
def test_bad_call_arguments_are_kit_errors_and_nothing_is_written(db):
    with pytest.raises(KitError, match="broker must be 'mock', 'ib' or a Broker object, not 'mok'"):
        kit.execute(buys(AAPL=1), broker="mok", run_key="bad", db=db, prices=PRICES)
    plan = kit.plan(buys(AAPL=1), run_key="bad", prices=PRICES)
    with pytest.raises(KitError, match=r"\['lot_size'\] shape planning: pass them to kit.plan"):
        kit.execute(plan, db=db, lot_size=10)
    with pytest.raises(KitError, match="run_key 'other' differs from the plan's 'bad'"):
        kit.execute(plan, run_key="other", db=db)
    assert not db.exists()


# ---- how a plan shows itself ------------------------------------------------------------------------------
def test_a_plan_renders_current_target_delta_notional_and_risk(db):
    broker = MockBroker(prices=PRICES)
    kit.execute(buys(AAPL=40), broker=broker, run_key="held", db=db, timeout=5)
    frame = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "target_quantity": [100, 200]})
    plan = kit.plan(frame, broker=broker, run_key="show", db=db, prices=PRICES,
                    risk={"max_order_notional": 50_000})
    html = plan._repr_html_()
    for column in ("current", "target", "delta", "notional", "risk"):
        assert f"<th>{column}</th>" in html
    assert "1 stopped by risk" in html and plan.hash in html
    assert "max_order_notional: 80,000.00 &gt; 50,000.00" in html
    table = plan.frame().set_index("symbol")
    assert table.loc["AAPL", ["current", "target", "delta", "notional", "risk"]].tolist() == [
        40, 100, 60, 12_000, "ok"]
    assert table.loc["MSFT", ["current", "target", "delta", "notional"]].tolist() == [0, 200, 200, 80_000]

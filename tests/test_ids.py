"""client_order_id derivation: `{run_key}-{symbol}-{side}`, `-n` for repeats, at most 64 characters, stable.

The ids are the idempotency keys of a resumed run and travel to IB as orderRef, so they must be the same in
every process and never collide within a run.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.errors import KitError, ValidationError
from kit.ids import MAX_ID_LENGTH, check_run_key, client_order_id, client_order_ids, run_id_for

run_keys = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@+-]{0,119}\Z")
symbols = st.from_regex(r"\A[A-Z0-9][A-Z0-9 .\-/]{0,20}\Z")
sides = st.sampled_from(["BUY", "SELL"])
PROPERTY = settings(max_examples=200, deadline=None)


def test_the_id_is_run_key_symbol_side():
    assert client_order_id("momentum-2026-11-21", "AAPL", "BUY") == "momentum-2026-11-21-AAPL-BUY"


def test_repeats_of_a_symbol_and_side_are_numbered_from_two():
    ids = client_order_ids("k", [("AAPL", "BUY"), ("MSFT", "SELL"), ("AAPL", "BUY"), ("AAPL", "BUY"),
                                 ("MSFT", "BUY")])
    assert ids == ["k-AAPL-BUY", "k-MSFT-SELL", "k-AAPL-BUY-2", "k-AAPL-BUY-3", "k-MSFT-BUY"]


def test_a_long_run_key_is_shortened_to_64_characters_keeping_symbol_and_side():
    run_key = "nightly-rebalance-of-the-global-momentum-book-" + "x" * 60
    coid = client_order_id(run_key, "AAPL", "BUY", 3)
    assert len(coid) == MAX_ID_LENGTH
    assert coid.startswith("nightly-rebalance-") and coid.endswith("-AAPL-BUY-3")
    # two long keys that share the kept prefix still give different ids
    assert client_order_id(run_key + "y", "AAPL", "BUY", 3) != coid


def test_ids_are_the_same_in_another_process():
    """A crashed run and its re-run live in different processes: no per-process salt may leak in."""
    run_key = "job:" + "z" * 90
    code = ("from kit.ids import client_order_id, run_id_for; "
            f"print(client_order_id({run_key!r}, 'BRK B', 'SELL', 2), run_id_for({run_key!r}), sep='|')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().split("|") == [client_order_id(run_key, "BRK B", "SELL", 2), run_id_for(run_key)]


BAD_KEYS = {
    "": "an explicit empty key is an error, not a new run",
    "-starts-with-dash": "'-' at position 0 is not allowed",
    "has space": "' ' at position 3 is a space or control character",
    "x" * 121: "it has 121 characters",
    "semi;colon": "';' at position 4 is not allowed",
    "abc\n": "'\\n' at position 3 is a space or control character",
    "a\tb": "'\\t' at position 1 is a space or control character",
    "nul\x00": "'\\x00' at position 3",
    "caf\u00e9": "'\u00e9' at position 3 is not allowed",
    "rtl\u202e": "'\\u202e' at position 3 is a space or control character",
    None: "it is a NoneType, not text",
    42: "it is a int, not text",
}


@pytest.mark.parametrize("bad", list(BAD_KEYS), ids=[repr(k)[:20] for k in BAD_KEYS])
def test_unusable_run_keys_are_refused_with_the_rule_and_the_reason(bad):
    with pytest.raises(ValidationError, match=r"run_key: .* is not usable") as error:
        check_run_key(bad)
    assert BAD_KEYS[bad] in str(error.value)
    assert "1-120 letters A-Z a-z, digits and . _ : @ + -" in str(error.value)
    assert error.value.problems[0][0] == "run_key"
    assert isinstance(error.value, KitError)


@PROPERTY
@given(st.text(max_size=130))
def test_a_run_key_is_accepted_exactly_when_it_matches_the_documented_pattern(key):
    documented = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,119}", key) is not None
    if documented:
        assert check_run_key(key) == key
    else:
        with pytest.raises(ValidationError):
            check_run_key(key)


@pytest.mark.parametrize("key", ["", "abc\n", " k"])
def test_kit_plan_and_execute_refuse_an_explicit_bad_run_key_and_write_nothing(key, db):
    import pandas as pd

    import kit
    from kit.brokers.mock import MockBroker

    targets = pd.DataFrame({"symbol": ["AAPL"], "quantity": [1]})
    with pytest.raises(ValidationError, match="run_key"):
        kit.plan(targets, run_key=key, db=db)
    broker = MockBroker(prices={"AAPL": 1.0})
    with pytest.raises(ValidationError, match="run_key"):
        kit.execute(targets, broker=broker, run_key=key, db=db)
    assert broker.submitted == [] and not db.exists()


def test_run_id_depends_only_on_the_run_key():
    assert run_id_for("a") == run_id_for("a") != run_id_for("b")
    assert run_id_for("a").startswith("r") and len(run_id_for("a")) == 16


@PROPERTY
@given(run_keys, symbols, sides, st.integers(1, 999))
def test_ids_are_short_stable_and_keep_the_readable_form_when_it_fits(run_key, symbol, side, n):
    coid = client_order_id(run_key, symbol, side, n)
    assert len(coid) <= MAX_ID_LENGTH
    assert coid == client_order_id(run_key, symbol, side, n)
    readable = f"{run_key}-{symbol}-{side}" + (f"-{n}" if n > 1 else "")
    if len(readable) <= MAX_ID_LENGTH:
        assert coid == readable
    else:
        assert coid.endswith(readable[len(run_key):])  # symbol, side and repeat stay readable


@PROPERTY
@given(run_keys, st.lists(st.tuples(symbols, sides), min_size=1, max_size=10))
def test_ids_within_one_run_never_collide(run_key, legs):
    ids = client_order_ids(run_key, legs)
    assert len(ids) == len(legs)
    assert len(set(ids)) == len(ids)
    assert ids == client_order_ids(run_key, legs)

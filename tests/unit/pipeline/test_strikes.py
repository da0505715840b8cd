import pytest

from fedwarden.pipeline.strikes import StrikeLedger


def test_k_strikes_ban_and_a_ban_is_final():
    ledger = StrikeLedger(strikes_to_ban=2)
    assert not ledger.strike("mallory", "zero update", 1)
    assert ledger.strike("mallory", "zero update", 2)
    assert ledger.banned == {"mallory"}
    assert "2 strikes, the last in round 2: zero update" in ledger.ban_reason("mallory")
    ledger.clean_round("mallory")
    assert not ledger.strike("mallory", "again", 3)
    assert ledger.banned == {"mallory"}


def test_a_clean_round_forgives_one_strike():
    ledger = StrikeLedger(strikes_to_ban=2)
    ledger.strike("alice", "unlucky", 1)
    ledger.clean_round("alice")
    assert not ledger.strike("alice", "unlucky", 3)
    assert ledger.banned == frozenset()


def test_state_round_trips():
    ledger = StrikeLedger(strikes_to_ban=1)
    ledger.strike("a", "x", 1)
    restored = StrikeLedger(strikes_to_ban=1)
    restored.load_state_dict(ledger.state_dict())
    assert restored.banned == {"a"}
    assert restored.strikes == {"a": 1}


def test_strikes_to_ban_must_be_positive():
    with pytest.raises(ValueError, match=">= 1"):
        StrikeLedger(strikes_to_ban=0)

"""Which chain a dial decision joins when a creditor's decisions are sharded."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.db.ledger_pg import chain_for
from dialer.config import ConfigError, build_config


def test_one_shard_is_the_creditors_single_chain() -> None:
    assert {chain_for("bank-a", f"C-{i}", 1) for i in range(50)} == {"bank-a"}


def test_a_decision_without_a_creditor_goes_to_the_dash_chain() -> None:
    assert chain_for("", "C-1", 8) == "-"


def test_a_case_always_joins_the_same_chain_and_cases_spread_over_all_of_them() -> None:
    chains = {f"C-{i}": chain_for("bank-a", f"C-{i}", 4) for i in range(200)}
    assert all(chain_for("bank-a", c, 4) == name for c, name in chains.items())
    assert set(chains.values()) == {"bank-a", "bank-a~1", "bank-a~2", "bank-a~3"}


@pytest.mark.parametrize("creditor", ["b" * 62, "b" * 64])
def test_a_creditor_name_too_long_for_a_suffix_keeps_its_single_chain(creditor: str) -> None:
    assert all(len(chain_for(creditor, f"C-{i}", 16)) <= 64 for i in range(100))
    assert chain_for("b" * 64, "C-1", 16) == "b" * 64


@pytest.mark.parametrize("shards", [0, 65])
def test_a_chain_shard_count_outside_1_to_64_is_refused_naming_the_key(shards: int, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="store.chain_shards"):
        build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"chain_shards": shards}})

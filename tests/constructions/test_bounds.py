"""The lower bounds of papers.md §1-2, computed, and ``sepbench bounds``."""

from __future__ import annotations

import math

import pytest

from sepbench import tasks
from sepbench.constructions.bounds import lower_bound, symbol_bits, transformer_bound
from sepbench.errors import SepbenchError
from tests.test_cli import sepbench


def test_index_lookup_needs_n_log_alphabet_bits_the_papers_n_over_p_for_two_symbols() -> None:
    bound = lower_bound("index_lookup", 400, precision=32)
    assert bound.bits == 400 * 6 and bound.width == 75 and bound.holds_on_test_data
    binary = lower_bound("index_lookup", 400, precision=32, vocab=2)
    assert binary.width == math.ceil(400 / 32)  # m >= N/p
    assert lower_bound("index_lookup", 6400, precision=16).width == 6400 * 6 // 16


def test_fano_lowers_the_bound_with_the_accuracy_and_never_below_zero() -> None:
    assert symbol_bits(64, 1.0) == 6.0
    assert 5.5 < symbol_bits(64, 0.99) < symbol_bits(64, 0.999) < 6.0
    assert symbol_bits(64, 1 / 64) == pytest.approx(0.0, abs=1e-9)
    assert symbol_bits(64, 0.0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("name", "length", "bits", "on_test_data"),
    [
        ("string_equality", 1000, 500, False),
        ("disjointness", 64, 32, False),
        ("nearest_neighbor", 256, 128, False),
        ("dyck", 100, 3.0, False),
        ("parity", 100, 1.0, False),
        ("counting", 1023, 10.0, False),
        ("associative_recall", 32, 32 * 6, True),
    ],
)
def test_each_tasks_bound(name: str, length: int, bits: float, on_test_data: bool) -> None:
    bound = lower_bound(name, length, precision=8)
    assert bound.bits == pytest.approx(bits)
    assert bound.width == math.ceil(bits / 8)
    assert bound.holds_on_test_data is on_test_data
    assert "papers.md" in bound.theorem


def test_copying_is_a_bound_on_the_test_data_and_dyck_counts_its_states() -> None:
    copy = lower_bound(tasks.get("string_equality", variant="copy", vocab_size=16), 100)
    assert copy.bits == 50 * 4 and copy.holds_on_test_data
    assert lower_bound(tasks.get("dyck", num_types=3, max_depth=2), 10).bits == math.log2(14)


def test_the_one_layer_transformer_bound_on_dyck_2_2() -> None:
    value = transformer_bound(tasks.get("dyck"), 1000, 16)["width_times_heads"]
    assert value == pytest.approx(999 / (3 * (16 + math.log2(1000))))
    assert transformer_bound(tasks.get("dyck", max_depth=3), 1000, 16) is None
    assert transformer_bound(tasks.get("parity"), 1000, 16) is None


def test_bad_requests_are_one_line() -> None:
    with pytest.raises(SepbenchError, match="no lower bound for task 'reversal'; known: "):
        lower_bound("reversal", 10)
    with pytest.raises(SepbenchError, match="parity has no alphabet to set"):
        lower_bound("parity", 10, vocab=4)
    with pytest.raises(SepbenchError, match="length must be an even integer"):
        lower_bound("string_equality", 11)


def test_the_command_prints_the_bound_with_its_theorem_and_the_construction() -> None:
    result = sepbench("bounds", "index_lookup", "--length", "400", "--precision", "32")
    assert result.returncode == 0, result.stderr
    assert "at least 2,400.0 bits: width m >= 75 at p = 32" in result.stdout
    assert "Bhattamishra et al. Thm 1 (INDEX" in result.stdout
    assert "upper bound: the construction index_lookup_attention: 1 layer" in result.stdout
    dyck = sepbench("bounds", "dyck", "--length", "400", "--precision", "16").stdout
    assert "a one-layer Transformer needs mH >= 5.4" in dyck and "width 12" in dyck
    bad = sepbench("bounds", "is_tree", "--length", "8")
    assert bad.returncode == 2 and "no lower bound for task 'is_tree'" in bad.stderr

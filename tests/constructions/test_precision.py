"""Precision as a knob: fixed point and float-mantissa rounding."""

from __future__ import annotations

import pytest
import torch

from sepbench.constructions.precision import Precision
from sepbench.errors import SepbenchError


def test_fixed_point_rounds_to_multiples_of_two_to_the_minus_p_and_saturates() -> None:
    rounded = Precision(3)(torch.tensor([0.06, 0.07, -0.3, 1.0 / 3, 100.0, -100.0]))
    torch.testing.assert_close(rounded, torch.tensor([0.0, 0.125, -0.25, 0.375, 8.0, -8.0]))


def test_an_average_over_more_than_two_to_the_p_plus_1_positions_rounds_to_zero() -> None:
    """The log-precision fact behind p = O(log N): 1/N survives only with p >= log2 N - 1."""
    assert float(Precision(8)(torch.tensor(1 / 600))) == 0.0
    assert float(Precision(10)(torch.tensor(1 / 600))) == pytest.approx(2 / 1024)


def test_float_rounding_keeps_p_significant_bits_at_any_scale() -> None:
    rounded = Precision(2, "float")(torch.tensor([1e-6 * 1.3, 5.0, -7.0, 0.0]))
    expected = torch.tensor([1e-6 * 1.3, 5.0, -7.0, 0.0])
    mantissa, exponent = torch.frexp(expected)
    torch.testing.assert_close(rounded, torch.ldexp(torch.round(mantissa * 4) / 4, exponent))
    assert float(rounded[1]) == 4.0 and float(rounded[2]) == -8.0


def test_no_precision_is_the_identity_and_bad_knobs_are_one_line() -> None:
    x = torch.randn(5)
    assert Precision(None)(x) is x
    with pytest.raises(SepbenchError, match=r"c: precision must be in \[1, 60\]"):
        Precision(0, owner="c")
    with pytest.raises(SepbenchError, match="rounding must be one of fixed, float"):
        Precision(4, "stochastic")

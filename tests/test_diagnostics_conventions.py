"""The two zero-norm conventions of a cosine, each pinned (SPEC §5–6 diagnostics).

An alignment with nothing to align is undefined: NaN, so a table shows it and a mean skips
it. Credit that has not reached a layer yet has cosine 0: what Figure 3 draws ahead of the
credit front. Values are checked against torch.nn.functional.cosine_similarity on the
flattened tensors, computed here; the zero cases against the stated convention. Catches a
swapped convention (0 for alignment, NaN for credit), a cosine over the wrong dimensions,
or a sign error.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pcalm.core import diagnostics


def _reference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1), eps=0.0))


def test_gradient_cosine_is_nan_for_a_zero_gradient():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(
        3, 4, generator=g, dtype=torch.float64)
    assert diagnostics.gradient_cosine(a, b) == pytest.approx(_reference(a, b), rel=1e-12)
    assert diagnostics.gradient_cosine(a, -a) == pytest.approx(-1.0, rel=1e-12)
    assert math.isnan(diagnostics.gradient_cosine(torch.zeros(3, 4), b))
    assert math.isnan(diagnostics.gradient_cosine(a, torch.zeros(3, 4)))


def test_credit_cosine_is_zero_in_a_layer_no_credit_has_reached():
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)  # [layer, batch, unit]
    target = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    eps[2] = 0.0  # layer 2: no credit yet
    got = diagnostics.credit_cosine(eps, target)
    want = [_reference(eps[k], target[k]) if k != 2 else 0.0 for k in range(4)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12,
                               atol=0)
    assert diagnostics.credit_cosine_whole(eps, target) == pytest.approx(_reference(eps, target),
                                                                      rel=1e-12)
    assert diagnostics.credit_cosine_whole(torch.zeros_like(eps), target) == 0.0

import math

import pytest
import torch

from srsnn.snn.surrogates import make_surrogate


@pytest.mark.parametrize(
    "spec, x, expected",
    [
        ({"name": "triangular", "gamma": 1.0}, [0.0, 0.5, -0.5, 1.0, 2.0], [1.0, 0.5, 0.5, 0.0, 0.0]),
        ({"name": "triangular", "gamma": 0.5}, [0.0, 0.25], [2.0, 1.0]),
        ({"name": "exponential", "gamma_d": 0.3, "gamma_s": 2.0}, [0.0, 1.0], [0.3, 0.3 * math.exp(-2.0)]),
        ({"name": "rectangular", "gamma": 2.0}, [0.0, 0.99, 1.01], [0.5, 0.5, 0.0]),
        ({"name": "straight_through"}, [-3.0, 0.0, 5.0], [1.0, 1.0, 1.0]),
        ({"name": "atan", "alpha": 2.0}, [0.0], [1.0]),
        ({"name": "fast_sigmoid", "slope": 25.0}, [0.0, 0.04], [1.0, 0.25]),
    ],
)
def test_surrogate_derivative_at_points(spec, x, expected):
    sg = make_surrogate(spec)
    v = torch.tensor(x, requires_grad=True)
    out = sg(v)
    assert torch.equal(out, (v >= 0).float())
    out.sum().backward()
    assert torch.allclose(v.grad, torch.tensor(expected), atol=1e-6)
    # the in-place variant used by the fused IF kernel's backward gives the same values
    assert torch.allclose(sg.derivative_(torch.tensor(x)), torch.tensor(expected), atol=1e-6)


def test_bad_surrogate_names_the_problem():
    with pytest.raises(ValueError, match="unknown surrogate"):
        make_surrogate("sigmoidish")
    with pytest.raises(ValueError, match="gamma must be a positive"):
        make_surrogate({"name": "triangular", "gamma": -1})

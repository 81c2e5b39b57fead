"""SGLDEnsemble: every argument checked at construction; predicting before any kept sample warns."""

import math

import pytest
import torch

from probgen.ensembles import SGLDEnsemble
from probgen.testing import assert_rejects_argument

BAD = [
    ("num_chains", 0), ("lr", -1.0), ("lr", 0.0), ("lr", math.nan), ("temperature", -1.0), ("burn_in", -1),
    ("thin", 0), ("store_size", 0), ("sampler", "sgdl"), ("schedule", "cosine"), ("noise", "foo"),
    ("noise_scale", 0.0), ("prior", "foo"), ("prior_scale", 0.0), ("prior_df", 0.0), ("store_policy", "first"),
    ("vectorize", "foo"), ("num_data", 0), ("init", "foo"), ("predict_chunk", 0), ("num_cycles", 0),
    ("exploration_fraction", 1.5), ("alpha", 1.0), ("eps", 0.0), ("friction", 0.0), ("friction", 1.5),
    ("input_dim", 0), ("output_dim", 0), ("activation", "foo"), ("poly_b", 0.0), ("poly_gamma", -1.0),
    ("total_steps", 0), ("precision_concentration", 0.0), ("precision_rate", 0.0), ("likelihood", "poisson"),
    ("burn_in", 1.5), ("seed", "zero"),
]


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_bad_argument_raises_at_construction_naming_it(name, value):
    assert_rejects_argument(SGLDEnsemble, name, value)


def test_hidden_dims_are_checked():
    with pytest.raises(ValueError, match=r"hidden_dims must be positive integers, got \[0\]"):
        SGLDEnsemble(hidden_dims=[0])


def test_predicting_before_any_kept_sample_warns():
    model = SGLDEnsemble(num_chains=2, hidden_dims=[4])
    x = torch.zeros(3, 1)
    with pytest.warns(UserWarning, match="no posterior sample has been kept yet.*2 current chain states"):
        model.predictive(x)
    with pytest.warns(UserWarning, match="no posterior sample has been kept yet"):
        model.sample(5)
    # asking for the chain states explicitly is not a fallback: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.ensemble.predictive(x, source="chains")


def test_num_cycles_cannot_exceed_total_steps():
    with pytest.raises(ValueError, match=r"^num_cycles must be an integer in \[1, 3\], got 4"):
        SGLDEnsemble(schedule="cyclical", total_steps=3, num_cycles=4)

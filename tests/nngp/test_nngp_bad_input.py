"""Bad input to the NNGP family: kernels, processes and ScaleMixtureNNGP's arguments."""

import math

import pytest
import torch

from probgen.nngp import GaussianProcess, NNGPKernel, ScaleMixtureGP, ScaleMixtureNNGP, StudentTProcess
from probgen.testing import assert_rejects_argument


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": -1}, "depth must be an integer >= 0, got -1"),
    ({"depth": 1.5}, "depth must be an integer >= 0, got 1.5"),
    ({"activation": "foo"}, "activation must be a callable or one of"),
    ({"weight_var": -1.0}, "weight_var must be positive and finite"),
    ({"weight_var": 0.0}, "weight_var must be positive and finite"),
    ({"weight_var": math.nan}, "weight_var must be positive and finite"),
    ({"bias_var": -1.0}, "bias_var must be >= 0 and finite"),
])
def test_kernel_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NNGPKernel(**kwargs)


@pytest.mark.parametrize("name", ["alpha", "beta"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_student_t_process_gives_one_message_for_every_bad_shape_parameter(name, value):
    # alpha=0 and alpha=-1 used to say "positive scalar" and "finite scalar >= 0"
    with pytest.raises(ValueError, match=rf"^{name} must be a finite scalar > 0, got {value:g}$"):
        StudentTProcess(NNGPKernel(), **{name: value})
    process = StudentTProcess(NNGPKernel())
    with pytest.raises(ValueError, match=rf"^{name} must be a finite scalar > 0, got {value:g}$"):
        setattr(process, name, value)


@pytest.mark.parametrize("make, error, match", [
    (lambda k: StudentTProcess(k, noise=-1.0), ValueError, "^noise must be a finite scalar >= 0, got -1$"),
    (lambda k: StudentTProcess(k, noise=math.nan), ValueError, "^noise must be a finite scalar >= 0, got nan$"),
    (lambda k: StudentTProcess(k, alpha="2"), TypeError, "^alpha must be a real scalar"),
    (lambda k: StudentTProcess("rbf"), TypeError, "kernel must be a gpytorch Kernel"),
    (lambda k: GaussianProcess(k, scale=0.0), ValueError, "^scale must be a finite scalar > 0, got 0$"),
    (lambda k: ScaleMixtureGP(k, prior="foo"), TypeError, "prior must be a torch.distributions.Distribution"),
    (lambda k: ScaleMixtureGP(k, prior=torch.distributions.Gamma(1.0, 1.0), noise=-1.0), ValueError, "^noise must be a finite scalar >= 0"),
])
def test_process_constructors_reject_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(NNGPKernel())


def test_noise_setter_is_checked_too():
    process = StudentTProcess(NNGPKernel(), noise=0.1)
    with pytest.raises(ValueError, match="^noise must be a finite scalar >= 0, got -0.5$"):
        process.noise = -0.5


X = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
Y = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _nan(shape):
    x = torch.zeros(*shape, dtype=torch.float64)
    x.view(-1)[3] = math.nan
    return x


@pytest.mark.parametrize("call, match", [
    (lambda p: p.fit(_nan((10, 2)), Y), r"^x contains NaN \(1 of 20 entries"),
    (lambda p: p.fit(X, _nan((10,))), r"^y contains NaN \(1 of 10 entries"),
    (lambda p: p.fit(X, Y[:5]), r"y must have shape \(n,\) or \(n, C\) with n = 10, got \(5,\)"),
    (lambda p: p.fit(X, Y).predict(torch.randn(3, 5, dtype=torch.float64)), r"x must have shape \(m, 2\), got \(3, 5\)"),
    (lambda p: p.fit(X, Y).predict(_nan((3, 2))), r"^x contains NaN \(1 of 6 entries"),
])
def test_fit_and_predict_reject_bad_data(call, match):
    with pytest.raises(ValueError, match=match):
        call(StudentTProcess(NNGPKernel(), noise=0.1))


MODULE = [
    ("depth", -1), ("weight_var", -1.0), ("bias_var", -1.0), ("prior", "foo"), ("alpha", 0.0), ("beta", -1.0),
    ("scale", 0.0), ("noise", -1.0), ("method", "foo"), ("learn_kernel", "yes"), ("learn_prior", 1), ("lr", 0.0),
    ("lr", math.nan), ("task", "foo"), ("num_classes", 1), ("max_train_points", 1), ("num_prob_samples", 0),
    ("likelihood", "foo"),
]


@pytest.mark.parametrize("name, value", MODULE, ids=[f"{n}={v}" for n, v in MODULE])
def test_module_rejects_bad_arguments_at_construction(name, value):
    err = assert_rejects_argument(ScaleMixtureNNGP, name, value)
    assert err.argument == name


def test_module_checks_per_layer_variances():
    with pytest.raises(ValueError, match=r"weight_var must have length 1 or 2, got 3 values"):
        ScaleMixtureNNGP(depth=1, weight_var=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"bias_var\[1\] must be a real number >= 0, got -0.1"):
        ScaleMixtureNNGP(depth=1, bias_var=[0.1, -0.1])

"""The default Markov approximation (K = 10, gamma_max = max(20, 10 T)): its closed-form error is what
docs/fractional.md tabulates, gamma_min <= 1/(10 T), and the step-size check names the derived default."""

import re
from pathlib import Path

import pytest
import torch

from probgen.fractional import FractionalSDE, LatentFractionalSDE, NeuralFractionalSDE
from probgen.sde import MarkovFBM

D = torch.float64
DOCS = Path(__file__).resolve().parents[2] / "docs" / "fractional.md"
HURSTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
ROW = re.compile(r"^\s*\|\s*([\d.]+)\s*\|\s*(\d+), (\d+) \((old|new)[^)]*\)\s*\|(.*)\|\s*$")


def _table():
    rows = []
    for line in DOCS.read_text().splitlines():
        m = ROW.match(line)
        if m:
            horizon, k, gmax, age, rest = m.groups()
            errs = [float(v) for v in rest.split("|")]
            rows.append((float(horizon), int(k), float(gmax), age, "Latent" in line, errs))
    return rows


def test_docs_table_of_the_default_error_is_the_closed_form():
    rows = _table()
    assert len(rows) == 8 and sum(r[3] == "new" for r in rows) == 4
    for horizon, k, gmax, age, latent, errs in rows:
        assert len(errs) == len(HURSTS)
        if age == "new":  # the defaults as constructed, not as documented
            sde = (LatentFractionalSDE(horizon=horizon) if latent else FractionalSDE(horizon=horizon)).sde
            assert (sde.n_ou, sde.gamma_max) == (k, gmax)
        for hurst, documented in zip(HURSTS, errs):
            m = MarkovFBM(hurst, k, gmax, horizon, "type1", dtype=D)
            rel = float(m.relative_error)
            assert rel == pytest.approx(documented, abs=5e-4 + 1e-12), (horizon, k, gmax, hurst)
            # the same number from the pointwise error (incomplete-gamma cross terms, not A w = b)
            grid = torch.linspace(0.0, horizon, 401, dtype=D)  # trapezoid error < 5e-5 here
            avg = float(torch.trapezoid(m.error_variance(grid), grid))
            assert avg / (horizon ** (2 * hurst + 1) / (2 * hurst + 1)) == pytest.approx(rel, abs=2e-4)


@pytest.mark.parametrize("horizon", [0.5, 1.0, 2.0, 4.0, 5.0])
def test_default_speeds_reach_one_tenth_of_the_inverse_horizon(horizon):
    model = FractionalSDE(horizon=horizon)
    sde = model.sde
    gammas = MarkovFBM(0.5, sde.n_ou, sde.gamma_max, sde.horizon, dtype=D).gammas
    assert model.sde.n_ou == 10 and model.hparams.gamma_max is None
    assert float(gammas.min()) <= 1 / (10 * horizon) * (1 + 1e-9)
    assert float(gammas.max()) == pytest.approx(max(20.0, 10 * horizon), rel=1e-9)
    assert NeuralFractionalSDE(horizon=horizon).gamma_max == model.sde.gamma_max
    clone = FractionalSDE(**model.hparams)  # gamma_max=None round-trips through the hyperparameters
    assert clone.sde.gamma_max == model.sde.gamma_max


def test_step_check_at_construction_names_the_derived_gamma_max():
    with pytest.raises(ValueError, match=r"gamma_max=None means max\(20, 10 \* horizon\) = 80 for horizon=8"):
        FractionalSDE(horizon=8.0)  # dt = 0.01: 80 * 0.01 > 0.5
    with pytest.raises(ValueError, match=r"gamma_max \* dt = 0.6 must be <= 0.5"):
        FractionalSDE(gamma_max=30.0, dt=0.02)
    with pytest.raises(ValueError, match="gamma_max"):
        LatentFractionalSDE(dt=0.05)  # default gamma_max 20 at horizon 1.1
    FractionalSDE(horizon=8.0, dt=0.005)
    FractionalSDE(horizon=8.0, gamma_max=20.0)  # an explicit gamma_max trades gamma_min for dt
    FractionalSDE(white=True, horizon=8.0)  # no OU processes, nothing to check


def test_rho_warning_with_the_default_k_states_the_closed_form_rho():
    model = FractionalSDE(horizon=2.0, hurst=0.2, theta=1.0, obs_std=0.05, dt=0.02, control_hidden=8)
    times = torch.linspace(0.1, 2.0, 20)
    values = torch.zeros(2, 20, 1)
    with pytest.warns(UserWarning, match="rho") as record:
        model.elbo(values, times)
    v0 = float(MarkovFBM(0.2, 10, 20.0, 2.0, dtype=D).omegas.sum())  # sigma = 1
    rho = float(re.search(r"obs_std\^2 = ([\d.e+]+)", str(record[0].message)).group(1))
    assert rho == pytest.approx(v0**2 * 0.1 / 5 / 0.05**2, rel=5e-3)  # h = 0.1 / 5 steps = 0.02
    assert v0 == pytest.approx(3.04, abs=0.005)  # docs/fractional.md: sum omega 3.04 at H = 0.2 (T = 2, K = 10)

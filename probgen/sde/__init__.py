"""Shared SDE/ODE solvers: everything in probgen that steps time forward.

``sdeint`` is a drop-in for ``torchsde.sdeint`` with a fast fixed-step path (``euler``,
``milstein``, ``heun``); ``odeint`` integrates ODEs (``euler``, ``heun``, ``rk4`` fixed-step,
``dopri5`` adaptive via torchdiffeq). Noise: :class:`BrownianGrid` and
:func:`brownian_increments`; fractional Brownian motion in :mod:`probgen.sde.fbm`; variational Gaussian transitions
with exact conditioning on linear-Gaussian observations in :mod:`probgen.sde.variational`; guided
proposals (a linear-Gaussian backward filter over the step grid and the guided Euler step) in
:mod:`probgen.sde.guided`.
"""

from probgen.sde.fbm import MarkovFBM, fbm_covariance, sample_fbm
from probgen.sde.grid import step_grid
from probgen.sde.guided import GuidedEuler, LinearGaussianChain, backward_filter, guided_initial_state
from probgen.sde.integrate_ode import odeint
from probgen.sde.integrate_sde import sdeint
from probgen.sde.noise import BrownianGrid, brownian_increments, grid_increments
from probgen.sde.ode_solvers import ODE_METHODS, RK4, Euler, Heun, ODESolver
from probgen.sde.sde_solvers import (
    SDE_METHODS,
    EulerMaruyama,
    ItoMilstein,
    SDESolver,
    StratonovichHeun,
    StratonovichMilstein,
)
from probgen.sde.variational import (
    LinearGaussianObservations,
    VariationalEuler,
    condition_on_observation,
    gaussian_transition_kl,
)

__all__ = [
    "MarkovFBM",
    "fbm_covariance",
    "sample_fbm",
    "ODE_METHODS",
    "RK4",
    "SDE_METHODS",
    "BrownianGrid",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "ItoMilstein",
    "ODESolver",
    "SDESolver",
    "StratonovichHeun",
    "StratonovichMilstein",
    "brownian_increments",
    "grid_increments",
    "odeint",
    "sdeint",
    "step_grid",
    "LinearGaussianObservations",
    "VariationalEuler",
    "condition_on_observation",
    "gaussian_transition_kl",
    "GuidedEuler",
    "LinearGaussianChain",
    "backward_filter",
    "guided_initial_state",
]

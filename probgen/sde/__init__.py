"""Shared SDE/ODE solvers: everything in probgen that steps time forward.

``sdeint`` is a drop-in for ``torchsde.sdeint`` with a fast fixed-step path (``euler``,
``milstein``, ``heun``); ``odeint`` integrates ODEs (``euler``, ``heun``, ``rk4`` fixed-step,
``dopri5`` adaptive via torchdiffeq). Noise: :class:`BrownianGrid` and
:func:`brownian_increments`; fractional Brownian motion in :mod:`probgen.sde.fbm`.
"""

from probgen.sde.fbm import MarkovFBM, fbm_covariance, sample_fbm
from probgen.sde.noise import BrownianGrid, brownian_increments, grid_increments
from probgen.sde.solvers import (
    ODE_METHODS,
    RK4,
    SDE_METHODS,
    Euler,
    EulerMaruyama,
    Heun,
    ItoMilstein,
    ODESolver,
    SDESolver,
    StratonovichHeun,
    StratonovichMilstein,
    odeint,
    sdeint,
    step_grid,
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
]

"""Kept for old imports: the solvers now live in their own modules.

========================================  ==================================================
``probgen.sde.integrate_sde``             ``sdeint``: the fast fixed-step path, dispatch
``probgen.sde.integrate_ode``             ``odeint``
``probgen.sde.sde_solvers``               ``SDESolver``, ``EulerMaruyama``, ``ItoMilstein``,
                                          ``StratonovichMilstein``, ``StratonovichHeun``
``probgen.sde.ode_solvers``               ``ODESolver``, ``Euler``, ``Heun``, ``RK4``
``probgen.sde.grid``                      ``step_grid``, node times, checks of ``ts``/``dt``
``probgen.sde.loop``                      the eager time loop and its checks
``probgen.sde.protocol``                  the torchsde SDE protocol (terms, ``names``, ``logqp``)
``probgen.sde.delegated``                 the solves handed to torchsde / torchdiffeq
``probgen.sde.compiled``                  the ``compile=True`` path
``probgen.sde.compat``                    torchsde / torchdiffeq compatibility (grids, options)
========================================  ==================================================

Import the public names from :mod:`probgen.sde`.
"""

from probgen.sde.grid import step_grid
from probgen.sde.integrate_ode import odeint
from probgen.sde.integrate_sde import sdeint
from probgen.sde.ode_solvers import ODE_METHODS, RK4, Euler, Heun, ODESolver
from probgen.sde.protocol import NOISE_TYPES, SDE_TYPES
from probgen.sde.sde_solvers import (
    SDE_METHODS,
    EulerMaruyama,
    ItoMilstein,
    SDESolver,
    StratonovichHeun,
    StratonovichMilstein,
)

__all__ = [
    "NOISE_TYPES",
    "ODE_METHODS",
    "RK4",
    "SDE_METHODS",
    "SDE_TYPES",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "ItoMilstein",
    "ODESolver",
    "SDESolver",
    "StratonovichHeun",
    "StratonovichMilstein",
    "odeint",
    "sdeint",
    "step_grid",
]

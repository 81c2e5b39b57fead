"""Exceptions raised when a numerical computation fails (as opposed to bad input).

Bad input raises ``ValueError`` / ``TypeError``. A computation that started from valid
input but broke down (NaN in a chain, a kernel matrix that stays non-PSD after jitter
escalation, a solver that blew up) raises a subclass of :class:`ProbgenNumericalError`
whose message says where it happened and what to try.
"""


class ProbgenError(Exception):
    """Base class of probgen's own exceptions."""


class ProbgenNumericalError(ProbgenError, ArithmeticError):
    """A numerical computation produced NaN/inf or lost positive definiteness."""


class SolverDivergedError(ProbgenNumericalError):
    """An SDE/ODE solve produced a non-finite state."""


class SamplerDivergedError(ProbgenNumericalError):
    """A Markov chain produced a non-finite state or energy."""


class NotPositiveDefiniteError(ProbgenNumericalError):
    """A covariance matrix stayed non-PSD after jitter escalation."""

"""Stochastic interpolants (Albergo, Boffi & Vanden-Eijnden 2023): flows and diffusions in one framework.

``Interpolant`` builds $x_t = \\alpha(t) x_0 + \\beta(t) x_1 + \\gamma(t) z$; the objectives in
:mod:`probgen.interpolants.objectives` learn $b$, $s$, $\\eta$ or $(v, s)$; :func:`generate`
samples with the probability-flow ODE or forward/backward SDEs on :mod:`probgen.sde`;
:func:`log_likelihood` evaluates $\\log\\rho_1$ by ODE (exact or Hutchinson divergence) or the SDE
estimator. :class:`StochasticInterpolant` is the LightningModule.
"""

from probgen.interpolants.couplings import (
    COUPLINGS,
    Coupling,
    IndependentCoupling,
    MinibatchOTCoupling,
    SinkhornCoupling,
    make_coupling,
    sinkhorn_plan,
)
from probgen.interpolants.gaussian import GaussianMixtureFields, standard_normal
from probgen.interpolants.generate import generate
from probgen.interpolants.module import StochasticInterpolant
from probgen.interpolants.guidance import guide, guided_fields
from probgen.interpolants.networks import ConditionEmbedding, TimeMLP, UNet
from probgen.interpolants.likelihood import bits_per_dim, divergence, log_likelihood
from probgen.interpolants.objectives import (
    OBJECTIVES,
    DenoiserObjective,
    Objective,
    ScoreObjective,
    VelocityDenoiserObjective,
    VelocityObjective,
    VelocityScoreObjective,
    denoiser_from_score,
    make_objective,
    score_from_denoiser,
    valid_time_interval,
    score_from_velocity,
    velocity_from_denoiser,
    velocity_from_score,
    velocity_from_v_and_score,
)
from probgen.interpolants.paths import (
    GAMMAS,
    PATHS,
    BrownianGamma,
    CustomGamma,
    CosSinPath,
    CustomPath,
    EncoderDecoderPath,
    Gamma,
    Interpolant,
    InterpolantSample,
    LinearPath,
    MirrorPath,
    Path,
    QuadraticGamma,
    SigmoidGamma,
    Sin2Gamma,
    TrigonometricPath,
    VPPath,
    ZeroGamma,
)

__all__ = [
    "StochasticInterpolant",
    "TimeMLP",
    "UNet",
    "ConditionEmbedding",
    "guided_fields",
    "guide",
    "Interpolant",
    "InterpolantSample",
    "Path",
    "LinearPath",
    "TrigonometricPath",
    "CosSinPath",
    "EncoderDecoderPath",
    "VPPath",
    "MirrorPath",
    "CustomPath",
    "Gamma",
    "ZeroGamma",
    "BrownianGamma",
    "Sin2Gamma",
    "SigmoidGamma",
    "QuadraticGamma",
    "CustomGamma",
    "PATHS",
    "GAMMAS",
    "Objective",
    "VelocityObjective",
    "ScoreObjective",
    "DenoiserObjective",
    "VelocityScoreObjective",
    "VelocityDenoiserObjective",
    "OBJECTIVES",
    "make_objective",
    "valid_time_interval",
    "velocity_from_v_and_score",
    "score_from_denoiser",
    "denoiser_from_score",
    "velocity_from_denoiser",
    "velocity_from_score",
    "score_from_velocity",
    "Coupling",
    "IndependentCoupling",
    "MinibatchOTCoupling",
    "SinkhornCoupling",
    "sinkhorn_plan",
    "COUPLINGS",
    "make_coupling",
    "generate",
    "log_likelihood",
    "divergence",
    "bits_per_dim",
    "GaussianMixtureFields",
    "standard_normal",
]

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
from probgen.interpolants.guidance import guide, guided_fields
from probgen.interpolants.likelihood import bits_per_dim, divergence, log_likelihood
from probgen.interpolants.module import StochasticInterpolant
from probgen.interpolants.networks import ConditionEmbedding, TimeMLP, UNet
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
    score_from_velocity,
    valid_time_interval,
    velocity_from_denoiser,
    velocity_from_score,
    velocity_from_v_and_score,
)
from probgen.interpolants.optimize import (
    AffineDrift,
    LearnedGamma,
    LearnedPath,
    forward_bridge,
    gaussian_schrodinger_bridge,
    maxmin_objective,
    optimize_interpolant,
)
from probgen.interpolants.paths import (
    GAMMAS,
    PATHS,
    BrownianGamma,
    CosSinPath,
    CustomGamma,
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
    "COUPLINGS",
    "GAMMAS",
    "OBJECTIVES",
    "PATHS",
    "AffineDrift",
    "BrownianGamma",
    "ConditionEmbedding",
    "CosSinPath",
    "Coupling",
    "CustomGamma",
    "CustomPath",
    "DenoiserObjective",
    "EncoderDecoderPath",
    "Gamma",
    "GaussianMixtureFields",
    "IndependentCoupling",
    "Interpolant",
    "InterpolantSample",
    "LearnedGamma",
    "LearnedPath",
    "LinearPath",
    "MinibatchOTCoupling",
    "MirrorPath",
    "Objective",
    "Path",
    "QuadraticGamma",
    "ScoreObjective",
    "SigmoidGamma",
    "Sin2Gamma",
    "SinkhornCoupling",
    "StochasticInterpolant",
    "TimeMLP",
    "TrigonometricPath",
    "UNet",
    "VPPath",
    "VelocityDenoiserObjective",
    "VelocityObjective",
    "VelocityScoreObjective",
    "ZeroGamma",
    "bits_per_dim",
    "denoiser_from_score",
    "divergence",
    "forward_bridge",
    "gaussian_schrodinger_bridge",
    "generate",
    "guide",
    "guided_fields",
    "log_likelihood",
    "make_coupling",
    "make_objective",
    "maxmin_objective",
    "optimize_interpolant",
    "score_from_denoiser",
    "score_from_velocity",
    "sinkhorn_plan",
    "standard_normal",
    "valid_time_interval",
    "velocity_from_denoiser",
    "velocity_from_score",
    "velocity_from_v_and_score",
]

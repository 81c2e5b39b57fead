"""Energy-based models trained by compositional optimisation (Jiang et al., ICML 2023).

Energies with a composition algebra (:mod:`probgen.energy.energies`), noise distributions
(:mod:`probgen.energy.noise`), objectives (:mod:`probgen.energy.objectives`), partition-function
estimates (:mod:`probgen.energy.partition`) and the ``EnergyBasedModel`` LightningModule.
"""

from probgen.energy.energies import (
    ConditionalMLPEnergy,
    ConditionedEnergy,
    ConvEnergy,
    Energy,
    LabelConditionedEnergy,
    MLPEnergy,
    QuadraticEnergy,
    SoftMinEnergy,
    SumEnergy,
    build_energy,
)
from probgen.energy.module import OBJECTIVES, EnergyBasedModel
from probgen.energy.noise import (
    FlowNoise,
    GaussianMixtureNoise,
    GaussianNoise,
    NoiseDistribution,
    NoiseEnergy,
    PulledBackEnergy,
    build_noise,
)
from probgen.energy.objectives import (
    MovingAverageLogZ,
    ObjectiveOutput,
    ReplayBuffer,
    compositional_loss,
    contrastive_divergence_loss,
    denoising_score_matching_loss,
    log_mean_exp,
    minibatch_loss,
    moving_average_update,
    nce_loss,
    storm_update,
)
from probgen.energy.partition import (
    LogPartitionBracket,
    LogPartitionEstimate,
    log_likelihood,
    log_partition_ais,
    log_partition_ais_flow,
    log_partition_grid,
    log_partition_importance,
)

__all__ = [
    "OBJECTIVES",
    "ConditionalMLPEnergy",
    "ConditionedEnergy",
    "ConvEnergy",
    "Energy",
    "EnergyBasedModel",
    "FlowNoise",
    "GaussianMixtureNoise",
    "GaussianNoise",
    "LabelConditionedEnergy",
    "LogPartitionBracket",
    "LogPartitionEstimate",
    "MLPEnergy",
    "MovingAverageLogZ",
    "NoiseDistribution",
    "NoiseEnergy",
    "ObjectiveOutput",
    "QuadraticEnergy",
    "ReplayBuffer",
    "SoftMinEnergy",
    "SumEnergy",
    "build_energy",
    "PulledBackEnergy",
    "build_noise",
    "compositional_loss",
    "contrastive_divergence_loss",
    "denoising_score_matching_loss",
    "log_likelihood",
    "log_mean_exp",
    "log_partition_ais",
    "log_partition_ais_flow",
    "log_partition_grid",
    "log_partition_importance",
    "minibatch_loss",
    "moving_average_update",
    "nce_loss",
    "storm_update",
]

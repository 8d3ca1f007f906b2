"""The training objectives by their first address: they live in `dla.train.objectives` now, one module each.

Kept so that `from dla.train.losses import ...` goes on working; new code imports from the objectives.
"""

from __future__ import annotations

from dla.nn.modes import batchnorm_batch_stats, batchnorm_eval
from dla.train.objectives import Objective, build_criterion
from dla.train.objectives.adversarial import Adversarial
from dla.train.objectives.cross_entropy import CrossEntropy
from dla.train.objectives.distillation import (
    Distillation,
    check_teacher,
    distillation_loss,
    load_teacher,
    teacher_logits,
)
from dla.train.objectives.outlier_exposure import OutlierExposure, load_auxiliary, uniform_cross_entropy

Criterion = Objective  # every objective's loss is an `Objective` instance

__all__ = ["Adversarial", "Criterion", "CrossEntropy", "Distillation", "OutlierExposure", "batchnorm_batch_stats",
           "batchnorm_eval", "build_criterion", "check_teacher", "distillation_loss", "load_auxiliary",
           "load_teacher", "teacher_logits", "uniform_cross_entropy"]

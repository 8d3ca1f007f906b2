"""Out-of-distribution detection: per-sample scores (higher = more in-distribution) and threshold-free metrics.

`dla ood RUN_DIR` (`dla.ood.run.ood_run`) evaluates a trained run against OOD sets with every score.

Feature-space detectors fitted on the ID training features (Mahalanobis, KNN, ViM, ReAct, DICE, ASH, entropy,
GEN) live in `dla.ood.detectors`; `dla ood RUN_DIR --methods all` runs them next to the scores.

`dla.ood.metrics` is the metrics *function*: it shadows its module of the same name, so import the helpers with
`from dla.ood.metrics import OODError` (which reads the module) rather than `import dla.ood.metrics as m`.
"""

from dla.ood.metrics import OODError, fpr_at_tpr, metrics, pr_curve, roc_curve
from dla.ood.recon import ConvAutoencoder, FeatureAutoencoder, train_autoencoder  # registers "recon"
from dla.ood.scores import (
    ScoreSpec,
    register_logit_score,
    register_score,
    score,
    score_loader,
    score_many,
    score_names,
    score_spec,
)

__all__ = [
    "ConvAutoencoder",
    "FeatureAutoencoder",
    "OODError",
    "ScoreSpec",
    "fpr_at_tpr",
    "metrics",
    "pr_curve",
    "register_logit_score",
    "register_score",
    "roc_curve",
    "score",
    "score_loader",
    "score_many",
    "score_names",
    "score_spec",
    "train_autoencoder",
]

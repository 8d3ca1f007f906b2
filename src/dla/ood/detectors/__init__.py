"""Feature-space OOD detectors: fitted once on the ID training features, then scoring (see `base`).

Built in (one module each): mahalanobis, mahalanobis_pre (with input preprocessing), knn, vim, react, dice, ash
(features and the linear head) and entropy, gen (logits only). `make_detector(name, **options).fit(train)
.score(test)`; `dla ood --methods all` runs them next to the logit scores of `dla.ood.scores`, and
`--option knn.k=10` sets an option (`dla.ood.detector_options`).
"""

from dla.ood.detectors.base import Detector, detector_defaults, detector_names, make_detector, register_detector

__all__ = ["Detector", "detector_defaults", "detector_names", "make_detector", "register_detector"]

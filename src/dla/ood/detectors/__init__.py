"""Feature-space OOD detectors: fitted once on the ID training features, then scoring (see `base`).

Built in (one module each): mahalanobis, knn, vim, react, dice, ash (features and the linear head) and entropy,
gen (logits only). `make_detector(name, **options).fit(train).score(test)`; `dla ood --methods all` runs them
next to the logit scores of `dla.ood.scores`.
"""

from dla.ood.detectors.base import Detector, detector_names, make_detector, register_detector

__all__ = ["Detector", "detector_names", "make_detector", "register_detector"]

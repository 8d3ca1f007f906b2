"""The detector contract and its registry: `fit(train FeatureSet)` once, then `score(FeatureSet)` any number of times.

A detector reads what `dla.ood.features.extract` computed once per image (penultimate features, logits, the
linear head), never the network, so a whole table of detectors costs one forward pass per image. Scores are a
CPU float32 tensor (N,), higher = more in-distribution, like every `dla.ood.score`. The base class checks the
inputs once for all of them (fitted before scoring, a non-empty training set with every class present, the
feature width the detector was fitted on) and raises `OODError`, one line naming the fix.

A new detector is one module in this package: subclass `Detector`, decorate it with `@register_detector(name,
description)`, implement `_fit` (when `needs_fit`) and `_score`. Importing the package imports every module in
it, so it enrols in `detector_names()`, `dla ood --methods` and tests/ood/test_detector_contract.py by itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from dla.ood.features import FeatureSet
from dla.ood.metrics import OODError
from dla.registry import Registry, check_options

D = TypeVar("D", bound="Detector")


class Detector:
    """Base class; subclasses set `name` (by the decorator), `needs_fit` and `needs_features`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = True  # False: scores from the test features alone (entropy, GEN, ASH)
    needs_features: ClassVar[bool] = True  # False: reads the logits only, so any classifier works
    needs_inputs: ClassVar[bool] = False  # True: runs the network again on the images (FeatureSet.inputs, .model)

    def __init__(self) -> None:
        self.fitted = False
        self._dim: int | None = None  # feature width seen by `fit`

    def fit(self: D, train: FeatureSet) -> D:
        """Fit on the ID training set (features, logits, labels); returns self."""
        if self.needs_fit:
            self._check_train(train)
            self._fit(train)
            self._dim = None if train.features is None else train.features.shape[1]
        self.fitted = True
        return self

    def score(self, data: FeatureSet) -> torch.Tensor:
        """(N,) CPU float32 scores of `data`, higher = more in-distribution."""
        if self.needs_fit and not self.fitted:
            raise OODError(f"detector {self.name!r} must be fitted before it scores: call .fit(train features) "
                           "with the ID training set first (`dla ood` does it)")
        if self.needs_features:
            from dla.ood.features import check_features

            width = check_features(data, self.name).shape[1]
            if self._dim is not None and width != self._dim:
                raise OODError(f"detector {self.name!r} was fitted on {self._dim}-dim features and got {width}-dim "
                               "ones; score features of the model it was fitted with")
        if len(data) == 0:
            return torch.empty(0)
        if self.needs_inputs and (data.inputs is None or data.model is None or len(data.inputs) != len(data)):
            raise OODError(f"detector {self.name!r} steps the input images through the network again, and this "
                           "feature set has no images or model: score `dla.ood.features.extract(model, images)`")
        s = self._score(data)
        if s.shape != (len(data),):
            raise OODError(f"detector {self.name!r} returned {tuple(s.shape)} for {len(data)} samples")
        return s.detach().to("cpu", torch.float32)

    def options(self) -> dict[str, Any]:
        """The constructor's options and their values, for results.json."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def _check_train(self, train: FeatureSet) -> None:
        if len(train) == 0:
            raise OODError(f"detector {self.name!r} cannot be fitted on an empty feature set: give it the ID "
                           "training images' features (N >= 1)")
        if self.needs_features:
            from dla.ood.features import check_features

            check_features(train, self.name)
        if train.labels is None:
            raise OODError(f"detector {self.name!r} is fitted with the training labels; the feature set has none")
        k = train.logits.shape[1]
        missing = sorted(set(range(k)) - set(train.labels.unique().tolist()))
        if missing:
            raise OODError(f"detector {self.name!r}: class {missing[0]} has no training sample ({len(missing)} of "
                           f"{k} classes missing); fit on a training set with every class (a larger --fit-limit)")

    def _fit(self, train: FeatureSet) -> None:
        raise NotImplementedError

    def _score(self, data: FeatureSet) -> torch.Tensor:  # (N,), higher = more ID
        raise NotImplementedError


def register_detector(name: str, description: str) -> Callable[[type[D]], type[D]]:
    """Decorate a `Detector` subclass; its constructor's keyword options need defaults."""

    def decorate(cls: type[D]) -> type[D]:
        from dla.ood.scores import score_names

        if name in score_names():  # scores and detectors share `--methods`
            raise ValueError(f"OOD method {name!r} registered twice")
        DETECTORS.add(name, cls)
        cls.name, cls.description = name, description
        return cls

    return decorate


def _ensure_builtin() -> None:
    # Every module of this package is a detector: importing it runs its decorator.
    import importlib
    import pkgutil

    import dla.ood.detectors as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base":
            importlib.import_module(f"{package.__name__}.{info.name}")


DETECTORS: Registry[type[Detector]] = Registry("OOD detector", OODError, builtin=_ensure_builtin)


def detector_names() -> list[str]:
    return DETECTORS.names()


def detector_defaults(name: str) -> dict[str, Any]:
    """The options of detector `name` and their defaults, e.g. {"k": 50} for knn."""
    params = list(inspect.signature(DETECTORS.get(name).__init__).parameters.values())[1:]
    return {p.name: p.default for p in params}


def make_detector(name: str, **options: Any) -> Detector:
    """A new, unfitted detector `name` with `options` (e.g. `make_detector("knn", k=10)`)."""
    cls = DETECTORS.get(name)
    check_options(cls.__init__, options, f"detector {name!r}", OODError, skip=1)
    return cls(**options)

"""Every built-in detector gives pytorch-ood 0.4.0's scores on the same features, to 1e-5 of the scores' scale.

Same features, labels and head for both; dla's scores are higher-is-ID, pytorch-ood's are outlier scores, so the
sign flips. Two scale factors, by definition rather than by error: pytorch-ood's Mahalanobis covariance is the
within-class scatter not divided by N (the paper's, and ours, is the covariance), so its distances are N times
smaller; its GEN averages the top-M terms where the paper (and we) sum them. The tolerance is relative to the
largest score (atol = 1e-5 * max |score|) because pytorch-ood computes in float32 and dla in float64: a score
near 0 keeps float32's absolute rounding of the larger terms it is a difference of (ViM: energy - virtual logit).
The toy features keep every softmax probability above 1e-7, where pytorch-ood clips probabilities (entropy, GEN).
mahalanobis_pre is compared with pytorch-ood's MahalanobisODIN on the same network and images (the toy net's,
and a small dla MLP's below), images inside [0, 1] so that dla's clamp to the image range never acts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dla.ood.detectors import make_detector
from dla.ood.features import FeatureSet

from . import pood
from .features_toy import NET, K, id_set, make, ood_set, trained_head


def _train_and_test() -> tuple[FeatureSet, FeatureSet]:
    test = torch.cat([id_set(200, seed=5).features, ood_set().features])  # (400, D): ID and OOD together
    return id_set(), make(test)


def _close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    reference = reference.detach().double()
    assert ours.shape == reference.shape and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def _mahalanobis(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    ref = pood.detector("mahalanobis").Mahalanobis(None).fit_features(train.features, train.labels)
    return -len(train) * ref.predict_features(test.features)


def _mahalanobis_pre(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    ref = pood.detector("mahalanobis").MahalanobisODIN(NET.penultimate, eps=0.002)
    return -len(train) * ref.fit_features(train.features, train.labels).predict(test.inputs).detach()


def _knn(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    ref = pood.detector("knn").KNN(None, k=50).fit_features(train.features, train.labels)
    return -ref.predict_features(test.features)


def _vim(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    h = train.head
    ref = pood.detector("vim").ViM(None, d=4, w=h.weight, b=h.bias).fit_features(train.features, train.labels)
    return -ref.predict_features(test.features)


def _react(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    ref = pood.detector("react").ReAct(None, head=train.head, percentile=0.9)
    return -ref.fit_feature_maps(train.features, train.labels).predict_feature_maps(test.features)


def _dice(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    ref = pood.detector("dice").DICE(None, train.head.weight, train.head.bias, p=0.9)
    return -ref.fit_features(train.features, train.labels).predict_features(test.features)


def _ash(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    # pytorch-ood's ASH shapes (B, C, H, W) maps; the pooled features are (B, D, 1, 1) maps.
    ref = pood.detector("ash").ASH(None, head=lambda m: train.head(m.flatten(1)), variant="ash-s", percentile=0.9)
    return -ref.predict_feature_maps(test.features[:, :, None, None])


def _entropy(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    return -pood.detector("entropy").Entropy.score(test.logits)


def _gen(train: FeatureSet, test: FeatureSet) -> torch.Tensor:
    return -K * pood.detector("gen").GEN.score(test.logits, gamma=0.1, M=100)  # its mean over the K classes


REFERENCES: dict[str, tuple[dict[str, object], Callable[[FeatureSet, FeatureSet], torch.Tensor]]] = {
    "mahalanobis": ({}, _mahalanobis),
    "mahalanobis_pre": ({"eps": 0.002}, _mahalanobis_pre),
    "knn": ({"k": 50}, _knn),
    "vim": ({"d": 4}, _vim),
    "react": ({"percentile": 0.9}, _react),
    "dice": ({"p": 0.9}, _dice),
    "ash": ({"percentile": 0.9}, _ash),
    "entropy": ({}, _entropy),
    "gen": ({"gamma": 0.1, "m": 100}, _gen),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_scores_equal_pytorch_ood(name: str) -> None:
    options, reference = REFERENCES[name]
    train, test = _train_and_test()
    assert float(test.logits.softmax(1).min()) > 1e-7 and float(test.logits.softmax(1).max()) < 1 - 1e-7
    detector = make_detector(name, **options)
    if detector.needs_fit:
        detector.fit(train)
    _close(detector.score(test), reference(train, test))


def test_the_toy_head_is_not_degenerate() -> None:
    # ViM's origin -W^+ b and DICE's contributions are only compared meaningfully with a full-rank head.
    assert torch.linalg.matrix_rank(trained_head().weight) == K


@pytest.mark.parametrize("eps", [0.002, 0.01])
def test_mahalanobis_pre_equals_pytorch_ood_on_a_dla_network(eps: float) -> None:
    # A dla MLP (GELU: no dead units, a well-conditioned covariance, since pytorch-ood inverts it in float32; a
    # ReLU net with cond ~ 4e3 takes the very same input steps, and its plain Mahalanobis scores already differ by
    # ~1e-4 from that float32 inverse). Images inside [0.05, 0.95]: dla's clamp to [0, 1] never acts.
    from dla.models import ModelInputs, build_model
    from dla.models.mlp import MLPConfig
    from dla.ood.features import extract

    torch.manual_seed(0)
    net = build_model(MLPConfig(width=16, depth=2, activation="gelu"), ModelInputs((1, 8, 8), 4, (0.5,), (0.25,)))
    g = torch.Generator().manual_seed(4)
    x_train, x_test = (0.05 + 0.9 * torch.rand(n, 1, 8, 8, generator=g) for n in (400, 64))
    train, test = extract(net.eval(), x_train, torch.arange(400) % 4), extract(net, x_test)
    ours = make_detector("mahalanobis_pre", eps=eps).fit(train).score(test)
    ref = pood.detector("mahalanobis").MahalanobisODIN(net.penultimate, eps=eps)
    _close(ours, -len(train) * ref.fit_features(train.features, train.labels).predict(x_test).detach())
    plain = make_detector("mahalanobis").fit(train).score(test)
    assert (ours > plain).all()  # the step moved every image closer to its class mean


def test_the_toy_preprocessing_step_changes_the_scores() -> None:
    train, test = _train_and_test()
    pre, plain = (make_detector(n, **o).fit(train).score(test) for n, o in (("mahalanobis_pre", {"eps": 0.002}),
                                                                               ("mahalanobis", {})))
    assert (pre > plain).all() and float((pre - plain).abs().max()) > 1e-2 * float(plain.abs().max())
    assert torch.equal(make_detector("mahalanobis_pre", eps=0).fit(train).score(test), plain)

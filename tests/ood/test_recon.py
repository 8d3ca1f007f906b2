"""The reconstruction-error score: an autoencoder fit to ID images scores them above noise; caching; features mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dla.models import ModelInputs, build_model
from dla.models.cnn import CNNConfig
from dla.models.mlp import MLPConfig
from dla.ood import OODError, metrics, score
from dla.ood.recon import ConvAutoencoder, FeatureAutoencoder, autoencoder_for_run, penultimate, train_autoencoder


def bars(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """uint8 (n, 1, size, size): dark images with one bright horizontal or vertical bar. A tiny ID dataset."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, size, size), 20, dtype=torch.uint8)
    pos = torch.randint(1, size - 2, (n,), generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    for i in range(n):
        p = int(pos[i])
        if vertical[i]:
            x[i, :, :, p : p + 2] = 230
        else:
            x[i, :, p : p + 2, :] = 230
    return x


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_recon_scores_id_above_noise_after_a_short_fit() -> None:
    torch.manual_seed(123)  # the global RNG must not matter: the fit is seeded by its own argument
    ae = train_autoencoder(bars(256, 0), epochs=4, batch_size=32, lr=5e-3, seed=0)
    assert isinstance(ae, ConvAutoencoder) and not ae.training
    id_x = bars(100, 1).float() / 255  # unseen ID images
    noise = torch.rand(100, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    model = torch.nn.Identity()  # the pixel autoencoder does not use the classifier
    s_id, s_noise = score(model, id_x, "recon", autoencoder=ae), score(model, noise, "recon", autoencoder=ae)
    assert (s_id <= 0).all() and (s_noise <= 0).all()  # a negated squared error
    assert s_id.mean() > s_noise.mean()
    assert metrics(s_id, s_noise)["auroc"] > 0.99
    # The score is -MSE of the reconstruction, by hand.
    with torch.no_grad():
        by_hand = -((ae(id_x) - id_x) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(s_id, by_hand)
    # Deterministic: the same data and seed give the same weights, another seed other weights.
    torch.manual_seed(999)
    assert _same_weights(train_autoencoder(bars(256, 0), epochs=4, batch_size=32, lr=5e-3, seed=0), ae)
    assert not _same_weights(train_autoencoder(bars(256, 0), epochs=4, batch_size=32, lr=5e-3, seed=1), ae)


@pytest.mark.parametrize("size", [6, 7, 12, 28, 32])
def test_conv_autoencoder_keeps_the_input_shape(size: int) -> None:
    ae = ConvAutoencoder((3, size, size))
    x = torch.rand(2, 3, size, size)
    y = ae(x)
    assert y.shape == x.shape and (y >= 0).all() and (y <= 1).all()


def test_features_autoencoder_reads_the_classifiers_penultimate_vector() -> None:
    torch.manual_seed(0)
    inputs = ModelInputs((1, 12, 12), 3, (0.1,), (0.3,))
    cnn = build_model(CNNConfig(width=4, stages=2, depth=5), inputs).eval()
    x = bars(64, 3)
    ae = train_autoencoder(x, "features", cnn, epochs=2, batch_size=16, seed=0)
    assert isinstance(ae, FeatureAutoencoder)
    xf = x.float() / 255
    with torch.no_grad():
        f = cnn.features(xf).mean(dim=(2, 3))  # (B, 8): what the CNN's linear head reads
        torch.testing.assert_close(penultimate(cnn, xf), f)
        torch.testing.assert_close(ae.mean, f.mean(0))  # standardised with the ID features' statistics
        z = (f - ae.mean) / ae.std
        by_hand = -((ae(z) - z) ** 2).mean(1)
    torch.testing.assert_close(score(cnn, xf, "recon", autoencoder=ae), by_hand)
    mlp = build_model(MLPConfig(width=8, depth=1), inputs)
    with pytest.raises(OODError, match="MLP has no features"):
        train_autoencoder(x, "features", mlp, epochs=1)


def test_recon_without_an_autoencoder_says_how_to_get_one() -> None:
    with pytest.raises(OODError, match=r"score 'recon' needs autoencoder=\.\.\.: fit one with"):
        score(torch.nn.Identity(), torch.rand(2, 1, 6, 6), "recon")
    with pytest.raises(OODError, match="autoencoder must be a ConvAutoencoder or FeatureAutoencoder; got Linear"):
        score(torch.nn.Identity(), torch.rand(2, 1, 6, 6), "recon", autoencoder=torch.nn.Linear(2, 2))
    with pytest.raises(OODError, match="mode must be 'pixels' or 'features'"):
        train_autoencoder(bars(4, 0), "latent")  # type: ignore[arg-type]


def test_cache_is_reused_with_the_same_settings_and_refit_otherwise(tmp_path: Path) -> None:
    x, logs = bars(64, 4), []
    first = autoencoder_for_run(tmp_path, x, "pixels", torch.nn.Identity(), epochs=1, seed=0, log=logs.append)
    assert (tmp_path / "autoencoder.pt").is_file() and len(logs) == 1
    again = autoencoder_for_run(tmp_path, x, "pixels", torch.nn.Identity(), epochs=1, seed=0, log=logs.append)
    assert len(logs) == 1 and _same_weights(first, again)  # read back, not fit again
    autoencoder_for_run(tmp_path, x, "pixels", torch.nn.Identity(), epochs=2, seed=0, log=logs.append)
    assert len(logs) == 2  # other settings: fit again
    (tmp_path / "autoencoder.pt").write_bytes(b"not a checkpoint")
    autoencoder_for_run(tmp_path, x, "pixels", torch.nn.Identity(), epochs=2, seed=0, log=logs.append)
    assert "ignoring the cached autoencoder" in logs[2] and len(logs) == 4

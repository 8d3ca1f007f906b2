"""pytorch-grad-cam 1.5.7 (PyPI `grad-cam`) as a reference, imported without torchvision.

Its package `__init__` and `base_cam.py` import torchvision, opencv and ttach (for image utilities, detection
targets and test-time augmentation), none of which a CAM formula needs and none of which this project installs.
The formulas live in small subclass files (grad_cam_plusplus.py, layer_cam.py, score_cam.py) that import only
`BaseCAM` from base_cam and numpy / torch / tqdm. So we register bare package modules for `pytorch_grad_cam` and
`pytorch_grad_cam.utils` (with `__path__`, so their submodules are found by name without running their
`__init__`s) and for `pytorch_grad_cam.base_cam` (holding a plain `BaseCAM` placeholder), import those files,
and call their `get_cam_weights` / `get_cam_image` on activations and gradients we capture ourselves. The shared
parts of the pipeline (capturing A and dA, ReLU, upsampling, min-max) are Grad-CAM's, already checked against
captum.
Everything is removed from sys.modules again afterwards; without grad-cam installed the tests skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

PACKAGE = "pytorch_grad_cam"


class BaseCAMPlaceholder:
    """Stands in for base_cam.BaseCAM: the subclasses' formulas only read `model`, `device` and `batch_size`, and
    call `get_cam_image` (LayerCAM overrides it)."""

    def __init__(self, model: Any, target_layers: Any = None, reshape_transform: Any = None,
                 uses_gradients: bool = True) -> None:
        self.model, self.device, self.batch_size = model, "cpu", 16

    def get_cam_image(self, input_tensor: Any, target_layer: Any, targets: Any, activations: np.ndarray,
                      grads: Any, eigen_smooth: bool = False) -> np.ndarray:
        """BaseCAM's combination for 2-D maps without eigen smoothing: sum_k w_k A_k, (B, h, w)."""
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)  # (B, C)
        return (np.asarray(weights)[:, :, None, None] * activations).sum(axis=1)

    def get_cam_weights(self, *args: Any) -> np.ndarray:
        raise NotImplementedError  # every reference subclass that uses get_cam_image above defines it


@contextmanager
def pytorch_grad_cam(*submodules: str) -> Iterator[dict[str, types.ModuleType]]:
    """{name: module} for `pytorch_grad_cam.<name>`, imported past the package's torchvision imports."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("grad-cam (pytorch-grad-cam) is not installed: pip install --no-deps grad-cam==1.5.7")
    saved = {k: v for k, v in sys.modules.items() if k == PACKAGE or k.startswith(f"{PACKAGE}.")}
    root = spec.submodule_search_locations[0]
    bare = {name: types.ModuleType(name) for name in (PACKAGE, f"{PACKAGE}.utils")}
    bare[PACKAGE].__path__ = [root]  # submodules load from the real files
    bare[f"{PACKAGE}.utils"].__path__ = [os.path.join(root, "utils")]  # its __init__ imports opencv
    base = types.ModuleType(f"{PACKAGE}.base_cam")
    base.BaseCAM = BaseCAMPlaceholder  # type: ignore[attr-defined]
    sys.modules.update({**bare, base.__name__: base})
    try:
        try:
            modules = {name: importlib.import_module(f"{PACKAGE}.{name}") for name in submodules}
        except ImportError as err:  # e.g. scikit-learn, which layer_cam's utils import, is absent
            pytest.skip(f"pytorch-grad-cam's {', '.join(submodules)} cannot be imported: {err}")
        yield modules
    finally:
        for k in [k for k in sys.modules if k == PACKAGE or k.startswith(f"{PACKAGE}.")]:
            del sys.modules[k]
        sys.modules.update(saved)

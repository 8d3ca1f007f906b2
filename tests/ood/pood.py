"""pytorch-ood's detectors, imported without its package `__init__` (which imports torchvision, absent here).

Its detector modules themselves need only torch, numpy, scipy and sklearn, so stub `pytorch_ood` and
`pytorch_ood.detector` as bare packages and import the modules by file. With torchvision installed the real
package is used. `detector(name)` skips the calling test when pytorch-ood is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest


def _stub_packages() -> None:
    if "pytorch_ood" in sys.modules:  # imported, or stubbed by an earlier call
        return
    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pytorch-ood is not installed (pip install --no-deps pytorch-ood==0.4.0)")
    if importlib.util.find_spec("torchvision") is not None:
        importlib.import_module("pytorch_ood")
        return
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, folder in (("pytorch_ood", root), ("pytorch_ood.detector", root / "detector")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package


def detector(module: str) -> types.ModuleType:
    """pytorch_ood.detector.<module>, e.g. detector("mahalanobis").Mahalanobis."""
    _stub_packages()
    return importlib.import_module(f"pytorch_ood.detector.{module}")

"""ResNet-18 (He et al. 2016, ImageNet variant) with torchvision's module and state-dict names, for fine-tuning.

The modules are named exactly as in `torchvision.models.resnet18` (conv1, bn1, layer1.0.conv1, ...,
layer2.0.downsample.0/1, fc), so torchvision's published weights `resnet18-f37072fd.pth` (a raw state_dict,
122 entries) load into it with `torch.load(weights_only=True)`, with no torchvision import (torchvision is not a
dependency: its only build here is CUDA-linked).

Like every dla model it takes the dataset's [0, 1] images. In front of torchvision's network sit:
- grey -> RGB: a 1-channel image is repeated to 3 channels, so conv1 always has torchvision's shape;
- `resize`: bilinear resampling to resize x resize inside the model (ImageNet features are tuned to objects
  of ImageNet's scale; 32x32 CIFAR images upsampled to 112-224 transfer much better than native);
- Normalize: ImageNet's mean/std when the weights are pretrained (the statistics they were trained with),
  else the dataset's.

`pretrained`: "" (random init), a local file (torchvision's raw state_dict, or a dla checkpoint of a resnet18
run), or "torchvision": the published file, looked up under <data root>/weights/ and torch's hub cache, and
downloaded into <data root>/weights/ when online (sha256 checked against the f37072fd prefix in its name, as
torchvision does). That data root is $DLA_DATA, else ./data (a model builder is not handed the CLI's
--data-root); a relative file path is tried from the working folder, then under the data root. The ImageNet
head (1000 classes) is loaded only when the data has 1000 classes; otherwise `fc` keeps its fresh initialisation.

`finetune=head` freezes everything but `fc` (a linear probe on fixed features): the frozen parameters get
requires_grad=False, so the optimizer never sees them, and the frozen BatchNorms stay in eval mode even while
the model trains, so their running statistics are not overwritten by the new data and the features really are
fixed. `finetune=full` trains every layer.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dla.config import ModelConfig, opt
from dla.data.files import download, file_digest
from dla.data.root import offline, resolve_data_root
from dla.errors import CheckpointError, DataError
from dla.models.registry import ModelInputs, register_model
from dla.nn import Normalize
from dla.nn.init import kaiming_conv_bn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
TORCHVISION_FILE = "resnet18-f37072fd.pth"
TORCHVISION_SHA256_PREFIX = "f37072fd"  # torchvision's convention: the file name carries its hash's prefix


@dataclass
class ResNet18Config(ModelConfig):
    name: str = opt("resnet18", "model from the registry")
    pretrained: str = opt("", "'' = random init; 'torchvision' = torchvision's ImageNet weights (resnet18-f37072fd"
                              ".pth, from <data root>/weights/ or downloaded when online); or a path to such a "
                              "state_dict file (or a dla resnet18 checkpoint)")
    finetune: Literal["full", "head"] = opt("full", "full = train every layer; head = freeze all but fc (frozen "
                                                    "BatchNorms stay in eval mode: a linear probe)")
    resize: int = opt(0, "resample the images to resize x resize (bilinear) inside the model; 0 = native size. "
                         "112 or 224 suit ImageNet weights on 32x32 images", ge=0, le=1024)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus the (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H / s, W / s)
        identity = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu(h + identity)


class ResNet18(nn.Module):
    """grey->RGB -> resize -> normalize -> torchvision's ResNet-18 (stem, layer1-4, avgpool, fc)."""

    def __init__(self, cfg: ResNet18Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.in_channels = inputs.input_shape[0]
        self.resize = cfg.resize
        self.finetune = cfg.finetune
        if cfg.pretrained:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:  # the dataset's statistics, per RGB channel after the grey -> RGB repeat
            mean, std = tuple(inputs.mean), tuple(inputs.std)
            if len(mean) == 1:
                mean, std = mean * 3, std * 3
        self.normalize = Normalize(mean, std)
        # torchvision's names from here on: the state dict of everything below is torchvision's.
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, inputs.num_classes)
        self._init()

    def _init(self) -> None:
        # torchvision's initialisation (fc keeps nn.Linear's default, as in torchvision).
        kaiming_conv_bn(self)

    def backbone(self) -> list[nn.Module]:
        """Everything `finetune=head` freezes: all of torchvision's modules but fc."""
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def freeze_backbone(self) -> None:
        for module in self.backbone():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> ResNet18:
        # The loop calls model.train() every epoch; a frozen backbone must stay in eval mode through it, or its
        # BatchNorms would re-estimate their running statistics on the new data.
        super().train(mode)
        if self.finetune == "head":
            for module in self.backbone():
                module.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, 512, h, w)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB: (B, 3, H, W)
        if self.resize and tuple(x.shape[-2:]) != (self.resize, self.resize):
            down = self.resize < min(x.shape[-2:])
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False,
                              antialias=down)  # (B, 3, R, R); antialiasing only matters when shrinking
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))  # (B, 64, R/4, R/4)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, R/32, R/32)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, 512): what fc reads
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, classes)
        return self.fc(self.penultimate(x))

    @property
    def head(self) -> nn.Linear:
        """The linear classifier over the pooled features, under the name CAM looks for."""
        return self.fc

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in torchvision's format (122 entries): ours without the Normalize buffers."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("normalize.")}


# --------------------------------------------------------------------------------------------------
# Pretrained weights


def weights_cache(data_root: Path | None = None) -> Path:
    """Where `pretrained=torchvision` keeps the file: <data root>/weights/resnet18-f37072fd.pth."""
    return (data_root or resolve_data_root()) / "weights" / TORCHVISION_FILE


def _hub_copy() -> Path | None:
    """The copy torchvision itself would have cached (torch.hub's checkpoints folder), if there is one."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    return path if path.is_file() else None


def _check_hash(path: Path) -> None:
    got = file_digest(path, "sha256")
    if not got.startswith(TORCHVISION_SHA256_PREFIX):
        raise DataError(f"{path} is not torchvision's {TORCHVISION_FILE}: its sha256 starts {got[:8]}, expected "
                        f"{TORCHVISION_SHA256_PREFIX}; delete it (it is corrupt or another file) and download again")


def torchvision_weights(data_root: Path | None = None) -> Path:
    """The verified local copy of torchvision's ResNet-18 weights, downloaded first when online and missing."""
    cached = weights_cache(data_root)
    if not cached.is_file() and (hub := _hub_copy()) is not None:
        cached = hub
    if cached.is_file():
        _check_hash(cached)
        return cached
    if offline():
        reason = "offline (DLA_OFFLINE is set)"
    else:
        staging = cached.with_name(f".{TORCHVISION_FILE}.unverified")  # never under the name a loader reads
        try:
            download(TORCHVISION_URL, staging)
            _check_hash(staging)
            os.replace(staging, cached)
            return cached
        except DataError as exc:
            staging.unlink(missing_ok=True)
            reason = str(exc)
        except OSError as exc:  # e.g. a read-only data root
            reason = f"cannot write under {cached.parent}: {exc.strerror}"
    raise DataError(f"model.pretrained=torchvision needs {TORCHVISION_FILE}, which is not at {cached} ({reason}); "
                    f"download {TORCHVISION_URL} and put it there, or pass model.pretrained=/path/to/"
                    f"{TORCHVISION_FILE}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A raw state_dict (or a dla checkpoint's weights) read with the weights-only unpickler: no code runs."""
    if not path.is_file():
        raise CheckpointError(f"model.pretrained={str(path)!r}: no such file; pass a path to a ResNet-18 state_dict "
                              f"(.pth), 'torchvision' for the published weights, or '' for random init")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"refused model.pretrained={path}: it holds objects a weights-only load does not allow "
                              f"({first[:160]}); it may run code, so it was not loaded") from None
    except Exception as exc:  # a mangled stream can fail anywhere in the unpickler (IndexError, KeyError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"model.pretrained={path} is not a readable weights file ({first[:160]}); pass a "
                              f"ResNet-18 state_dict saved with torch.save") from None
    if isinstance(obj, Mapping) and obj.get("format") == "dla-checkpoint" and isinstance(obj.get("model"), Mapping):
        obj = {k: v for k, v in obj["model"].items() if not k.startswith("normalize.")}  # a dla resnet18 run
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"model.pretrained={path} is not a state_dict (a mapping of names to tensors); pass "
                              f"torchvision's resnet18 weights or a file saved with torch.save(model.state_dict())")
    return dict(obj)


def _some(keys: list[str]) -> str:
    return f"{len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"


def load_pretrained(model: ResNet18, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Copy torchvision-named weights into `model`; fc only when its shape fits. Returns the keys skipped."""
    own = model.torchvision_state_dict()
    skipped = [k for k in ("fc.weight", "fc.bias") if k in state and state[k].shape != own[k].shape]
    wanted = [k for k in own if k not in skipped and not (k.startswith("fc.") and k not in state)]
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        problems = ([f"missing keys {_some(missing)}"] if missing else []) + (
            [f"unexpected keys {_some(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"model.pretrained={source} is not a torchvision ResNet-18 state_dict: "
                              f"{'; '.join(problems)}")
    for k in wanted:
        if state[k].shape != own[k].shape:
            raise CheckpointError(f"model.pretrained={source}: {k} has shape {tuple(state[k].shape)}, ResNet-18 has "
                                  f"{tuple(own[k].shape)}; is it another architecture?")
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(state[k])  # own's tensors are the model's parameters and buffers
    return skipped


@register_model("resnet18", ResNet18Config, "torchvision's ResNet-18 (same state-dict names): pretrained ImageNet "
                                            "weights, full or head-only fine-tuning, resize inside")
def build_resnet18(cfg: ResNet18Config, inputs: ModelInputs) -> nn.Module:
    model = ResNet18(cfg, inputs)
    if cfg.pretrained:
        path = torchvision_weights() if cfg.pretrained == "torchvision" else _resolve(cfg.pretrained)
        load_pretrained(model, read_state_dict(path), cfg.pretrained)
    if cfg.finetune == "head":
        model.freeze_backbone()
    return model


def _resolve(text: str) -> Path:
    """A path as given (absolute, or relative to the working folder), else relative to the data root."""
    path = Path(text).expanduser()
    if path.is_absolute() or path.is_file():
        return path
    under_root = resolve_data_root() / path
    return under_root if under_root.is_file() else path

"""Building blocks shared by the models."""

from dla.nn.normalize import Normalize
from dla.nn.unfold_conv import UnfoldConv2d

__all__ = ["Normalize", "UnfoldConv2d"]

"""Building blocks shared by the models."""

from dla.nn.normalize import Normalize

__all__ = ["Normalize"]

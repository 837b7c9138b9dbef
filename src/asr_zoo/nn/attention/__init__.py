"""The attention zoo. Every type: ``forward(x (B,N,D), pad_mask (B,N)) -> (B,N,D)``, chosen by name."""

from .base import SelfAttention
from .registry import ATTENTION, build_attention
from . import _load_all  # noqa: F401

__all__ = ["ATTENTION", "SelfAttention", "build_attention"]

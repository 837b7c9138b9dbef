"""The attention registry: name -> SelfAttention subclass and its config dataclass."""

from __future__ import annotations

from dataclasses import asdict

from ...registry import Registry

ATTENTION: Registry = Registry("attention type")


def build_attention(cfg, d_model: int, num_heads: int, causal: bool = False):
    """Build the attention module named by ``cfg.name`` with the rest of ``cfg`` as keyword args.

    Args:
        cfg: an ``AttentionConfig`` (or subclass / DictConfig with the same keys).
        d_model (int), num_heads (int), causal (bool): see :class:`SelfAttention`.
    """
    from . import _load_all  # noqa: F401  (import side effect: registers every type)

    params = dict(cfg) if not hasattr(cfg, "__dataclass_fields__") else asdict(cfg)
    entry = ATTENTION.get(params.pop("name"))
    return entry.obj(d_model, num_heads, causal=causal, **params)

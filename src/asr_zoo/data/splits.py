"""Split roles: ``train``, ``dev`` and ``test`` name the run's configured splits
(``data.train_splits``, ``data.dev_split``, ``data.test_split``), so ``asr-zoo eval RUN --split
test`` means ``test-clean`` on a LibriSpeech run and ``test`` on the synthetic corpus. Any other
name is a split directory / manifest name, used as given.
"""

from __future__ import annotations

from ..config import ConfigError

__all__ = ["ROLES", "split_names", "resolve_split"]

ROLES = ("train", "dev", "test")


def split_names(data, name: str) -> list[str]:
    """The split names ``name`` stands for under the data config ``data``: a role's configured
    split(s), or ``[name]``. A name that is itself a configured split is never reinterpreted."""
    configured = [*data.train_splits, data.dev_split, data.test_split]
    if name in configured or name not in ROLES:
        return [name]
    return list(data.train_splits) if name == "train" else [data.dev_split if name == "dev" else data.test_split]


def resolve_split(data, name: str) -> str:
    """The one split ``name`` stands for (``train`` with several training splits must be spelled out)."""
    names = split_names(data, name)
    if len(names) != 1:
        raise ConfigError(f"split {name!r} stands for {len(names)} splits ({', '.join(names)}): name one of them")
    return names[0]

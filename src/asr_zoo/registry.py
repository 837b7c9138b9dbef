"""A tiny name -> (builder, typed config) registry used for attention types, objectives and more.

Every entry carries the dataclass that is the schema of its config group, so that
``asr_zoo.config`` can validate ``conf/<group>/<choice>.yaml`` and command-line overrides
against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "Entry"]


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    config: type | None


class Registry(Generic[T]):
    """Maps a name to an object (class or function) and its config dataclass.

    >>> r = Registry("thing")
    >>> @r.register("a")
    ... class A: ...
    >>> r.get("a").obj is A
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, config)
            return obj

        return deco

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

"""A tiny name -> object registry (no import strings, no config magic), and the package's registries:
each is filled when its package is imported (its ``__init__`` imports the submodules, which register
themselves; build through it: ``build_model``, ...); kept here so that registering imports no ``__init__``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders. Unknown names raise, listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS: Registry = Registry("model")  # fetalbio.models: networks
CODECS: Registry = Registry("codec")  # fetalbio.codecs: keypoint target encoders/decoders
LOSSES: Registry = Registry("loss")  # fetalbio.losses: training losses
TASKS: Registry = Registry("task")  # fetalbio.tasks: task classes by family

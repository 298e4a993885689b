"""A generic name -> class registry for methods and tasks (a leaf module: stdlib only), after lm-eval's.

Built-ins are an explicit list of modules imported on first lookup; importing a module registers its classes
with @registry.register. A name registered twice by two different classes is a bug and raises at import.
"""
import importlib
from typing import Generic, TypeVar

from harness.options import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtins: tuple[str, ...] = (), error: type[InputError] = InputError):
        self.kind = kind                  # "method", "task": used in messages
        self.builtins = builtins          # modules that register the built-in entries
        self.error = error                # the InputError subclass raised for an unknown name
        self._entries: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        name = cls.name
        known = self._entries.get(name)
        if known is not None and _origin(known) != _origin(cls):
            raise ValueError(f"{self.kind} {name!r} is registered twice: by {_origin(known)} and {_origin(cls)}")
        self._entries[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a throwaway class)."""
        self._entries.pop(name, None)

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.builtins:
                importlib.import_module(module)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def all(self) -> dict[str, type[T]]:
        self._load()
        return dict(sorted(self._entries.items()))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


def _origin(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

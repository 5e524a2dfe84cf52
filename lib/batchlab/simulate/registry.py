"""A registry of named classes of one kind (the batching policies, the routers).

A class declares its ``name``; :meth:`Registry.register` (a decorator) adds it under that name and
:meth:`Registry.lookup` finds it again, case-insensitively, with an :class:`InputError` listing the
registered names. A registry is a ``dict`` of name -> class, in registration order.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from batchlab.errors import InputError

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(dict[str, T], Generic[T]):
    """Registered subclasses of ``base`` by name; ``kind`` names them in messages and is the
    ``field`` of their errors (``"policy"``, ``"router"``)."""

    def __init__(self, base: type, kind: str) -> None:
        super().__init__()
        self.base = base
        self.kind = kind

    def check(self, cls: object) -> None:
        """InputError unless ``cls`` is a subclass of ``base`` that declares a ``name``."""
        if not (isinstance(cls, type) and issubclass(cls, self.base) and cls.name):
            raise InputError(
                f"a {self.kind} must be a {self.base.__name__} subclass with a name",
                field=self.kind,
            )

    def register(self, cls: T) -> T:
        """Add ``cls`` (checked by :meth:`check`) under its name; returns it (a decorator)."""
        self.check(cls)
        self[cls.name] = cls
        return cls

    def lookup(self, name: str) -> T:
        """The class registered as ``name`` (case-insensitive); InputError listing them."""
        key = str(name).strip().lower()
        if key not in self:
            raise InputError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self)}", field=self.kind
            )
        return self[key]

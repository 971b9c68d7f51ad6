"""Training methods: each is one module of this package defining ``METHOD``, a
:class:`~jsnn.methods.base.Method` (its options and what it adds to a run).

- ``surrogate``: plain surrogate-gradient training (the default);
- ``dspike``: Dspike's finite-difference temperature search (Li et al., NeurIPS 2021);
- ``cpng``: the chi-controlled surrogate width (CPNG, ICLR 2023 submission);
- ``event_driven``: spike-time gradients (Zhu et al., NeurIPS 2022) with a network of its own;
- :mod:`jsnn.methods.fdg`: the pure finite-difference numerics Dspike's search is built on.

A method outside this package is named by its module's dotted path (``mypackage.mymethod``),
which must define ``METHOD`` the same way.
"""

from __future__ import annotations

import importlib
import pkgutil

from jsnn.methods import fdg
from jsnn.methods.base import Hook, Method

__all__ = ["Hook", "Method", "fdg", "get", "names"]


def names() -> tuple[str, ...]:
    """The names of the methods in this package."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        if hasattr(importlib.import_module(f"{__name__}.{module.name}"), "METHOD"):
            found.append(module.name)
    return tuple(sorted(found))


def get(name: str) -> type[Method]:
    """The method ``name``: ``jsnn.methods.<name>.METHOD``, or for a dotted ``name`` the
    ``METHOD`` of that module."""
    path = name if "." in str(name) else f"{__name__}.{name}"
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as error:
        if error.name is None or not path.startswith(error.name):
            raise  # the module exists but one of its own imports is missing
        module = None
    method = getattr(module, "METHOD", None)
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise ValueError(
            f"method name {name!r} is not known; expected one of {names()} or the dotted path "
            f"of a module defining METHOD, a jsnn.methods.Method"
        )
    return method

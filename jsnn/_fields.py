"""Config sections as frozen dataclasses: fields with help texts, and parsing a field from text.

Every section (the trainer's, the model's, the data's, each method's) is a frozen dataclass
whose fields are declared with :func:`option`; the command line turns each field into a flag
with its type and help text read from here, so a new field needs no parser code.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["option", "text_parser"]


def option(default: Any, help: str) -> Any:
    """A dataclass field with ``default`` and the ``help`` the command line shows for it (a
    mapping default becomes a fresh read-only copy per instance)."""
    metadata = {"help": help}
    if isinstance(default, Mapping):
        frozen = dict(default)
        return dataclasses.field(
            default_factory=lambda: MappingProxyType(frozen), metadata=metadata
        )
    return dataclasses.field(default=default, metadata=metadata)


def text_parser(section: type, name: str) -> Callable[[str], Any]:
    """A function parsing the field ``name`` of the dataclass ``section`` from its command-line
    text: ``int``, ``float``, ``str``, ``bool`` (true/false), ``X | None`` ("none"), and
    ``tuple[int, ...]`` as ``"4,2"`` (``""`` or ``"none"`` for ``()``)."""
    hint = typing.get_type_hints(section)[name]
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]

        def parse_items(text: str):
            if text.strip().lower() in ("", "none"):
                return ()
            return tuple(item(part) for part in text.split(","))

        return parse_items
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    base = next(option for option in options if option is not type(None))
    nullable = type(None) in options

    def parse(text: str):
        if nullable and text.lower() == "none":
            return None
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.lower() in ("true", "1", "yes")
        try:
            return base(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected {base.__name__}, got {text!r}") from error

    return parse

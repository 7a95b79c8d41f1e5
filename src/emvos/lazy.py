"""Packages whose public names are imported on first use (PEP 562), so that importing a package, or
one of its light modules such as a subcommand's parser, does not import PyTorch.

A package lists its names by module and binds the two hooks::

    __getattr__, __dir__ = lazy_exports(__name__, {"emvos.train.config": ("TrainConfig", "load_config")})

``from package import Name`` and ``package.Name`` then import ``Name``'s module when first asked for;
the package also imports the names under ``typing.TYPE_CHECKING`` for type checkers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``, whose names come from ``modules``.

    Args:
        package: the package's ``__name__``.
        modules: each module's full name, and the names the package exports from it.

    Returns:
        ``(__getattr__, __dir__)``; ``__getattr__`` imports the name's module, keeps the name in the
        package (later lookups do not come back) and raises :class:`AttributeError` for other names.
    """
    homes = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__

"""Patch attributes by module path, keep a record of each patch, undo them one by one.

Every patch replaces one attribute in one class `__dict__` with a wrapt
`FunctionWrapper`. The record keeps the original object found there, so undoing
puts back exactly what was replaced. When someone else wrapped our wrapper in the
meantime, removing ours would drop theirs too: such a patch is left in place and
only switched off (its wrapper passes every call straight through).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wrapt

logger = logging.getLogger(__name__)

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass
class Patch:
    """One replaced attribute: where it lives, what was there, what we put there."""

    owner: type
    attribute: str
    original: Any
    wrapper: Any
    active: bool = True


_patches: list[Patch] = []


def applied() -> list[Patch]:
    """Return the patches in place, in the order they were applied."""
    return list(_patches)


def patch(module: str, path: str, wrapper: Wrapper) -> Patch | None:
    """Wrap `module.path` (e.g. `SyncAPIClient.request`) with `wrapper`.

    Returns None, and patches nothing, when the module or the attribute does not
    exist in the installed version; the attribute must live in the owner's own
    `__dict__`, so a subclass never shadows its base by accident.
    """
    owner_path, _, attribute = path.rpartition(".")
    try:
        owner: Any = importlib.import_module(module)
        for part in owner_path.split(".") if owner_path else ():
            owner = getattr(owner, part)
    except (ImportError, AttributeError):
        return None
    if not isinstance(owner, type) or attribute not in vars(owner):
        return None

    original = vars(owner)[attribute]
    if isinstance(original, staticmethod | classmethod):
        return None
    record = Patch(owner, attribute, original, None)

    def guarded(
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if not record.active:
            return wrapped(*args, **kwargs)
        return wrapper(wrapped, instance, args, kwargs)

    record.wrapper = wrapt.FunctionWrapper(original, guarded)
    setattr(owner, attribute, record.wrapper)
    _patches.append(record)
    return record


def undo_all() -> None:
    """Undo every patch, newest first; a patch wrapped by someone else is disabled."""
    while _patches:
        record = _patches.pop()
        record.active = False
        if vars(record.owner).get(record.attribute) is record.wrapper:
            setattr(record.owner, record.attribute, record.original)
        else:
            logger.debug(
                "traket left a disabled patch on %s.%s: it was wrapped again",
                record.owner.__qualname__,
                record.attribute,
            )

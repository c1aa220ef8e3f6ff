"""Progress bars on a terminal only: the one place every command's tqdm bar is made.

A bar is drawn when stderr (where tqdm draws) is a terminal and the command was not given
``--quiet``; a log redirected to a file gets no bar redraws (no ``\\r``), only the lines
written with :func:`write`.
"""
from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm import tqdm


def bars_wanted(quiet: bool = False) -> bool:
    """Whether progress bars are drawn: stderr is a terminal and ``quiet`` is not set."""
    if quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def progress_bar(iterable: Optional[Iterable] = None, *, quiet: bool = False, enabled: bool = True,
                 **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled unless :func:`bars_wanted` (and ``enabled``).

    A disabled bar still iterates, and its ``update``, ``set_postfix`` and ``close`` do nothing.
    """
    return tqdm(iterable, disable=not (enabled and bars_wanted(quiet)), **kwargs)


def write(message: str, file=None) -> None:
    """Print one line without breaking a bar being drawn (``tqdm.write``); plain print otherwise."""
    tqdm.write(message, file=file)

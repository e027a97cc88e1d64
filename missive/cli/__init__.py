"""Missive's command-line interface (``missive ...``, also ``python -m missive``).

Each command group lives in its own module exposing ``register(subparsers)``;
:mod:`missive.cli.main` lists them, so adding a group is adding a module.
"""

from missive.cli.main import main

__all__ = ["main"]

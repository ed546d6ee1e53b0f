"""The ``cachekit`` command."""

from cachekit.cli.app import main

__all__ = ["main"]

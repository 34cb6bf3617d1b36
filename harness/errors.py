"""User-facing errors: raised for bad input, printed by the commands as one line, exit code 2.

``HarnessError`` is not a ``ValueError``: a bug that raises ValueError keeps its traceback instead of
passing for a user's mistake. ``NoResults`` is the one expected outcome that is not bad input.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A mistake in the user's input (a file, a field, a URI); the message names it."""


class NoResults(RuntimeError):
    """A sweep ran but no trial reported an evaluation: there is nothing to rank (exit code 1)."""


class DataError(HarnessError):
    """A dataset file is missing, malformed or not what it claims to be."""


class ConfigError(HarnessError):
    """A config or sweep file has a bad field; the message starts with the field's path."""


class StorageError(HarnessError):
    """A storage URI cannot be reached, read or written."""

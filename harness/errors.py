"""User-facing errors: raised for bad input, printed by the commands as one line, exit code 2."""

from __future__ import annotations


class HarnessError(ValueError):
    """A mistake in the user's input (a file, a field, a URI); the message names it."""


class DataError(HarnessError):
    """A dataset file is missing, malformed or not what it claims to be."""


class ConfigError(HarnessError):
    """A config or sweep file has a bad field; the message starts with the field's path."""


class StorageError(HarnessError):
    """A storage URI cannot be reached, read or written."""

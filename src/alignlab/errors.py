"""The errors that mean "what you gave is wrong", as opposed to a bug in alignlab.

Every refusal of the user's input (a config key, a data file, a model folder, a path that is not
there) raises a :class:`UserError`; its message names the key, file, line or column and, where one
exists, the setting that fixes it. ``alignlab <stage>`` prints such an error as one line,
``alignlab <stage>: error: <message>``, and exits with status 2; anything else is a bug and keeps
its traceback.

They derive from ``ValueError`` (and :class:`MissingInputError` from ``FileNotFoundError`` too), so
code that caught those before still catches them. This module imports nothing from alignlab: every
layer may raise these.
"""

from __future__ import annotations


class UserError(ValueError):
    """The user's input is wrong; the message says which input and how to fix it."""


class ConfigError(UserError):
    """A config key, value or file the user gave is wrong; the message says which."""


class DataError(UserError):
    """Bad user data; the message names the file, line or column."""


class ModelLoadError(UserError):
    """A model or tokenizer the user named cannot be loaded: not there, not a model, or unsafe weights."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named (or an earlier step should have written) does not exist."""


class ModelNotFoundError(ModelLoadError, MissingInputError):
    """A model or tokenizer that is not where it was named: no such folder, or a hub id neither cached here nor
    downloadable. Also an ``OSError``, as transformers' own error for it was, so callers that skip a model
    they cannot find (``except OSError``) still do."""


class RunStopped(Exception):
    """A run stopped for a reason its message names, not a bug: a checkpoint that could not be written or
    trusted, a loss, reward or gradient that stopped being finite, a run folder another process holds.
    ``alignlab <stage>`` prints it as one line and exits with status 1; what was written before stays."""

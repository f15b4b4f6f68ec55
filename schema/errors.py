"""Errors that mean "the tool could not do its job" (exit code 2), never a traceback."""

from __future__ import annotations

# The documented exit codes: advice given; a --fail-on condition held; bad usage or input; an internal
# error (a bug); interrupted (a --run keeps every finished epoch for --resume).
EXIT_OK, EXIT_FINDING, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class TLAdviseError(Exception):
    """Base class: a problem with the user's input or environment, reported as one clear message.

    The message names what is wrong (a path, a value) and, where there is one, the fix.
    The CLI turns every subclass into exit code 2.
    """

    exit_code = 2


class DatasetError(TLAdviseError):
    """The dataset folder is missing, empty, or not laid out as ``root/<class>/<images>``."""


class BackboneError(TLAdviseError):
    """A backbone name is unknown, or its weights cannot be found or loaded."""


class RulesError(TLAdviseError):
    """A rules file is missing, unreadable, or fails validation."""


class ConfigError(TLAdviseError):
    """An option (flag, environment variable or pyproject entry) has a bad value."""


class StaleCheckpointError(ConfigError):
    """A checkpoint to resume from was written with other settings (data, recipe or options)."""

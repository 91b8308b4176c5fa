"""Exceptions that the CLI turns into one-line messages and a non-zero exit."""


class RdkitError(Exception):
    """Base class for every error a user can cause (bad input, bad recipe, ...)."""


class PluginError(RdkitError, LookupError):
    """An unknown plugin, a duplicate registration or bad plugin parameters."""


class RecipeError(RdkitError, ValueError):
    """A recipe that cannot be read, resolved or validated."""


class CheckpointError(RdkitError):
    """A checkpoint that is missing, unsafe or does not match the model."""


class DataError(RdkitError):
    """A dataset or image that cannot be read."""


class FormatError(RdkitError):
    """A malformed or unsupported compressed file."""

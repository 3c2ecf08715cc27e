"""Errors meant for users: the CLI prints `str(error)` as one line and exits non-zero."""


class EmoError(Exception):
    """Base class of errors that are the user's to fix (bad input, missing weights, ...)."""


class InputError(EmoError):
    """An input file (image, audio, video) is missing, unreadable or unusable."""


class WeightsError(EmoError):
    """A model directory or checkpoint is missing files, or does not match the config."""

"""Errors meant for users: the CLI prints `str(error)` as one line and exits non-zero."""


class EmoError(Exception):
    """Base class of errors that are the user's to fix (bad input, missing weights, ...)."""


class InputError(EmoError):
    """An input file (image, audio, video) is missing, unreadable or unusable."""


class WeightsError(EmoError):
    """A model directory or checkpoint is missing files, or does not match the config."""


def exit_code(action) -> int:
    """Run a script's work (a no-argument callable): 0 when it finishes, or one `error: ...` line
    on stderr and 2 when it raises an EmoError (the `python -m` entry points of training/)."""
    import sys

    try:
        action()
    except EmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

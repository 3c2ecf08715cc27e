"""Command-line argument types and the parser class of `emo-rt`: every numeric argument is checked
for its range (finite, within bounds) before any work, and every parse error is one
`emo-rt: error: ...` line with exit code 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_SEED = 2**63 - 1


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `emo-rt: error: argument --steps: ...`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"emo-rt: error: {message} (see `{self.prog} --help`)\n")


def _bounds(minimum, maximum, above: bool) -> str:
    low = "" if minimum is None else (f"> {minimum:g}" if above else f">= {minimum:g}")
    high = "" if maximum is None else f"<= {maximum:g}"
    return " and ".join(part for part in (low, high) if part)


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number within [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {_bounds(minimum, maximum, False)}, "
                                             f"got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value} is out of range: give an integer {_bounds(minimum, maximum, False)}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number within [minimum, maximum] (`above`: strictly above minimum)."""
    bounds = _bounds(minimum, maximum, above)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}") from None
        low_ok = minimum is None or (value > minimum if above else value >= minimum)
        if not math.isfinite(value) or not low_ok or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a finite number {bounds}")
        return value

    parse.__name__ = "number"
    return parse


def numbers(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], tuple[float, ...]]:
    """An argparse type: comma-separated finite numbers, each within [minimum, maximum]."""
    one = number(minimum, maximum)

    def parse(text: str) -> tuple[float, ...]:
        values = tuple(one(part.strip()) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        return values

    parse.__name__ = "numbers"
    return parse


def speed(text: str) -> float | str:
    """--speed: a head speed in deg/frame (finite, 0..10), or the path of a file of per-second values."""
    try:
        float(text)
    except ValueError:
        return text  # a file: read and checked by emo_rt.pipeline.speed_curve
    return number(0.0, 10.0)(text)


def face_box(text: str) -> str:
    """--face-box x,y,w,h: four numbers, width and height positive (checked against the image later)."""
    from emo_rt.errors import InputError
    from emo_rt.io.image import parse_face_box

    try:
        parse_face_box(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


STEPS = integer(1, 1000)  # denoising steps: at most the training schedule's 1000 timesteps
CFG = number(0.0, 30.0)  # guidance scale; 1 = off
SEED = integer(0, MAX_SEED)
THREADS = integer(1, 1024)

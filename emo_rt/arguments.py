"""Command-line argument types and the parser class of `emo-rt`: every numeric argument is checked
for its range (finite, within bounds) before any work, and every parse error is one
`emo-rt: error: ...` line with exit code 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

MAX_SEED = 2**63 - 1


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `emo-rt: error: argument --steps: ...`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"emo-rt: error: {message} (see `{self.prog} --help`)\n")


def _bounds(minimum, maximum, above: bool) -> str:
    low = "" if minimum is None else (f"> {_number(minimum)}" if above else f">= {_number(minimum)}")
    high = "" if maximum is None else f"<= {_number(maximum)}"
    return " and ".join(part for part in (low, high) if part)


def _number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"  # a seed bound stays 9223372036854775807


def integer(minimum: int | None = None, maximum: int | None = None, multiple_of: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number within [minimum, maximum] (and a multiple of `multiple_of`)."""
    kind = {1: "an integer", 2: "an even integer"}.get(multiple_of, f"a multiple of {multiple_of}")
    bounds = _bounds(minimum, maximum, False)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind} {bounds}, got {text!r}") from None
        if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
                or value % multiple_of):
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {kind} {bounds}")
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
    """--speed: a head speed in deg/frame (finite, 0..10), or the path of a file of per-second values
    (one per line or comma-separated, each 0..10; emo_rt.pipeline.speed_curve reads it)."""
    one = number(0.0, 10.0)
    try:
        float(text)
    except ValueError:
        try:
            values = Path(text).read_text().replace(",", " ").split()
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or err
            raise argparse.ArgumentTypeError(f"{text!r} is neither a speed in deg/frame (0-10) nor a readable "
                                             f"file of per-second speeds: {reason}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"speed curve {text} has no values")
        for value in values:
            try:
                one(value)
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"speed curve {text}: {err}") from None
        return text
    return one(text)


def face_box(text: str) -> str:
    """--face-box x,y,w,h: four numbers, width and height positive (checked against the image later)."""
    from emo_rt.errors import InputError
    from emo_rt.io.image import parse_face_box

    try:
        parse_face_box(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def device(text: str) -> str:
    """--device: cpu, or a CUDA device torch sees here (cuda, cuda:N)."""
    import torch

    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return text
    if parsed.type != "cuda":
        raise argparse.ArgumentTypeError(f"{text}: emo-rt runs on cpu or cuda (cuda:N)")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise argparse.ArgumentTypeError(f"{text}: torch sees no CUDA device here; use cpu")
    if parsed.index is not None and parsed.index >= count:
        raise argparse.ArgumentTypeError(f"{text}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return text


class MinMax(argparse.Action):
    """nargs="+" that takes one value or MIN MAX with MIN <= MAX (synth-data --seconds)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2 or values[0] > values[-1]:
            parser.error(f"argument {option_string}: give one value or MIN MAX with MIN <= MAX, "
                         f"got {' '.join(f'{v:g}' for v in values)}")
        setattr(namespace, self.dest, values)


# emo_rt.schedulers.SCHEDULERS' keys (a test keeps them equal), named here so that parsing a command
# line, its errors and --help import no diffusers (6 of the 7.5 s an argument error took)
SCHEDULER_NAMES = ("ddim", "ddpm", "dpm++", "euler", "unipc")
STEPS = integer(1, 1000)  # denoising steps: at most the training schedule's 1000 timesteps
CFG = number(0.0, 30.0)  # guidance scale; 1 = off
SEED = integer(0, MAX_SEED)
THREADS = integer(1, 1024)

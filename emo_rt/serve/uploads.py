"""A request's portrait and audio -> checked render inputs, with the CLI's one-line messages.

Uploads are written under names the server chooses, inside the job's own scratch folder; what a
client calls its files only ever appears in messages, in place of the server's paths.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from emo_rt.errors import EmoError, InputError
from emo_rt.io.files import write_bytes_atomic
from emo_rt.pipeline import Inputs, load_inputs


class RequestError(EmoError):
    """A request the server refuses: one line for the client, with its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 2**20  # per file
    max_audio_seconds: float = 60.0
    max_steps: int = 100  # denoising steps a request may ask for

    @property
    def max_request_bytes(self) -> int:
        """A whole multipart body: two files at their limit plus the form fields."""
        return 2 * self.max_upload_bytes + 2**16


def display_name(client_name: str | None, fallback: str) -> str:
    """What a client called its file, made safe to echo in one line: the last path part, printable,
    at most 80 characters; `fallback` when nothing is left."""
    name = re.split(r"[/\\]", client_name or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:80]
    return name or fallback


def check_size(size: int, what: str, name: str, limits: Limits) -> None:
    if size > limits.max_upload_bytes:
        raise RequestError(f"{what} file is too large: {name} is {size / 2**20:.1f} MB, this server takes at "
                           f"most {limits.max_upload_bytes / 2**20:g} MB (--max-upload-mb)", status=413)


def save_upload(data: bytes, path: Path) -> Path:
    """The upload's bytes at `path` (a name the server chose, in the job's scratch folder)."""
    return write_bytes_atomic(path, data)


_LOADING = threading.Lock()  # warnings are caught process-wide; the face detectors are not thread-safe


def check_inputs(image: Path, audio: Path, names: dict[Path, str], resolution: int, fps: int, sample_rate: int,
                 limits: Limits) -> tuple[Inputs, list[str]]:
    """`load_inputs` on the saved uploads, as `emo-rt render` checks its files, plus the server's
    audio length limit; every message names the files as the client did. Returns the inputs and
    the warnings they raised (silent audio, no face found)."""
    with _LOADING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            inputs = load_inputs(image, audio, resolution, fps, sample_rate=sample_rate)
        except InputError as err:
            raise RequestError(_renamed(str(err), names), status=422) from None
    seconds = inputs.native_audio.shape[0] / inputs.native_rate
    if seconds > limits.max_audio_seconds:
        raise RequestError(f"audio is too long: {names[audio]} lasts {seconds:.1f} s, this server renders at most "
                           f"{limits.max_audio_seconds:g} s (--max-seconds)", status=422)
    return inputs, [_renamed(str(w.message), names) for w in caught]


def _renamed(message: str, names: dict[Path, str]) -> str:
    for path, name in names.items():
        message = message.replace(str(path), name)
    return message

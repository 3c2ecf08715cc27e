"""Why a clip is not kept: a fixed set of reasons (the report counts them) and the exception that
carries one out of the decoding and face stages."""

from __future__ import annotations

NO_VIDEO = "no video stream"
CORRUPT = "corrupt or truncated"
BAD_FRAMES = "bad frames"  # a frame folder with unreadable images or images of different sizes
TOO_SHORT = "too short"
NO_AUDIO = "no audio"
NO_FACE = "no face"
SEVERAL_FACES = "several faces"
FACE_TOO_SMALL = "face too small"
FAILED = "failed"  # an unexpected error; the detail names it (a bug or a library failure)

REASONS = (NO_VIDEO, CORRUPT, BAD_FRAMES, TOO_SHORT, NO_AUDIO, NO_FACE, SEVERAL_FACES, FACE_TOO_SMALL, FAILED)


class ClipRejected(Exception):
    """A source (or one segment of it) cannot become a training clip; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

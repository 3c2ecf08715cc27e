"""The render queue of `emo-rt serve`: one pipeline in memory, one render at a time, jobs in the
order they came. Each job renders through `EmoPipeline.stream` into an mp4 in its own scratch
folder and keeps its frames as JPEGs, window by window, for the page to play while it renders."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from emo_rt.errors import EmoError
from emo_rt.io.video import VideoWriter
from emo_rt.pipeline import EmoPipeline, Inputs, RenderSettings
from emo_rt.serve.uploads import RequestError

logger = logging.getLogger(__name__)

JPEG_QUALITY = 85
SHUTTING_DOWN = "the server is shutting down"


class JobCancelled(Exception):
    """Raised inside a render whose job was cancelled; stops it at the next denoising step."""


def jpeg(frame: np.ndarray) -> str:
    """(R, R, 3) uint8 -> base64 JPEG text (what the page draws)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(eq=False)
class Job:
    id: str
    directory: Path  # the job's scratch folder: its uploads and its mp4
    inputs: Inputs | None  # dropped once rendered
    settings: RenderSettings
    total_frames: int
    fps: int
    warnings: list[str] = field(default_factory=list)
    state: str = "queued"  # queued -> rendering -> done | failed
    error: str | None = None
    error_status: int = 500  # the HTTP status a failed job answers with
    windows: list[list[str]] = field(default_factory=list)  # base64 JPEGs, window by window
    frames_done: int = 0
    steps_done: int = 0
    reference: str | None = None  # where its reference features came from: "cached" or "computed"
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    first_frames: float | None = None  # when the first window's frames were ready
    finished: float | None = None
    cancel_reason: str | None = None
    pinned: bool = False  # a `POST /api/render` job: kept until its request has answered (`JobQueue.drop`)
    listeners: set[Callable[[], None]] = field(default_factory=set)

    @property
    def video(self) -> Path:
        return self.directory / "video.mp4"

    @property
    def over(self) -> bool:
        return self.state in ("done", "failed")

    def changed(self) -> None:
        """Wake everyone watching this job (called from any thread)."""
        for wake in list(self.listeners):
            wake()

    def fail(self, message: str, status: int) -> None:
        self.state, self.error, self.error_status = "failed", message, status
        self.finished = time.monotonic()
        self.inputs = None

    def status(self, position: int | None) -> dict:
        """What the page and `GET /api/jobs/ID` show."""
        now = time.monotonic()
        elapsed = ((self.finished or now) - self.started) if self.started is not None else 0.0
        video_seconds = self.frames_done / self.fps
        return {
            "id": self.id, "state": self.state, "position": position, "error": self.error,
            "frames": self.frames_done, "total_frames": self.total_frames, "fps": self.fps,
            "steps": self.settings.steps, "steps_done": self.steps_done, "cfg": self.settings.cfg,
            "seed": self.settings.seed, "speed": self.settings.speed,
            "seconds_waiting": round(((self.started or now) - self.submitted), 3),
            "seconds_rendering": round(elapsed, 3),
            "first_frames_seconds": (round(self.first_frames - self.started, 3)
                                     if self.first_frames is not None and self.started is not None else None),
            "real_time_factor": round(elapsed / video_seconds, 3) if video_seconds else None,
            "render_fps": round(self.frames_done / elapsed, 3) if elapsed and self.frames_done else None,
            "reference": self.reference, "warnings": self.warnings,
            "video": f"/api/jobs/{self.id}/video" if self.state == "done" else None,
        }


class _Progress:
    """The pipeline's progress hooks for one job: counts steps and frames, and stops a cancelled
    job's render at its next denoising step (raised in the worker, handed to the render loop)."""

    def __init__(self, job: Job):
        self.job = job

    def advance_step(self) -> None:
        if self.job.cancel_reason is not None:
            raise JobCancelled(self.job.cancel_reason)
        self.job.steps_done += 1
        self.job.changed()

    def advance_window(self, frames: int) -> None:
        pass  # counted when the frames are written


class JobQueue:
    """Jobs wait in order; one worker thread renders them one at a time with the one pipeline.
    `max_waiting` bounds the queue (a full queue refuses with 503), `keep_finished` the finished
    jobs whose video and frames stay for the page; all files live under `scratch`."""

    def __init__(self, pipeline: EmoPipeline, scratch: Path, max_waiting: int = 16, keep_finished: int = 8,
                 threads: int | None = None):
        self.pipeline = pipeline
        self.scratch = scratch
        self.max_waiting, self.keep_finished, self.threads = max_waiting, keep_finished, threads
        self._lock = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._finished: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self.closing = False
        self._worker = threading.Thread(target=self._work, name="emo-rt-serve-render", daemon=True)
        self._worker.start()

    # ---- requests' side -------------------------------------------------------------------------
    def new_directory(self) -> tuple[str, Path]:
        """A fresh job id and its scratch folder."""
        job_id = secrets.token_urlsafe(12)
        directory = self.scratch / job_id
        directory.mkdir()
        return job_id, directory

    def submit(self, job: Job) -> int:
        """Queue `job`; returns its position (0: it renders now). Refused while closing or full."""
        with self._lock:
            if self.closing:
                raise RequestError(f"{SHUTTING_DOWN}: no new renders", status=503)
            if len(self._waiting) >= self.max_waiting:
                raise RequestError(f"the queue is full ({len(self._waiting)} renders waiting): try again later",
                                   status=503)
            self._waiting.append(job)
            self._jobs[job.id] = job
            self._lock.notify_all()
            return self._position(job)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def status(self, job: Job) -> dict:
        with self._lock:
            return job.status(self._position(job))

    def _position(self, job: Job) -> int | None:
        """Renders ahead of `job` (0: rendering now); None once it is over."""
        if job is self._running:
            return 0
        if job in self._waiting:
            return self._waiting.index(job) + (self._running is not None)
        return None

    def cancel(self, job: Job, reason: str) -> None:
        """A waiting job fails now; a rendering one stops at its next denoising step."""
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                job.fail(reason, 503)
                self._retire(job)
            elif job is self._running:
                job.cancel_reason = reason
        self._changed_all()

    def drop(self, job: Job) -> None:
        """Forget a finished job and remove its files (a `POST /api/render` job once answered)."""
        with self._lock:
            self._jobs.pop(job.id, None)
            if job in self._finished:
                self._finished.remove(job)
        job.windows = []
        shutil.rmtree(job.directory, ignore_errors=True)

    def snapshot(self) -> dict:
        with self._lock:
            return {"waiting": len(self._waiting), "rendering": self._running is not None,
                    "finished_kept": len(self._finished), "closing": self.closing}

    # ---- shutting down --------------------------------------------------------------------------
    def shut_down(self, grace: float) -> None:
        """Refuse new jobs, fail the waiting ones, and stop the rendering one if it has not finished
        within `grace` seconds. Returns at once (called from a signal handler)."""
        with self._lock:
            if self.closing:
                return
            self.closing = True
            waiting, running = list(self._waiting), self._running
            self._waiting.clear()
            for job in waiting:
                job.fail(f"{SHUTTING_DOWN}: the render did not start", 503)
                self._retire(job)
            self._lock.notify_all()
        self._changed_all(waiting)
        if running is not None:
            timer = threading.Timer(grace, self.cancel, (running, f"{SHUTTING_DOWN}: the render was stopped"))
            timer.daemon = True
            timer.start()

    def close(self, timeout: float = 60.0) -> None:
        """After `shut_down`: wait for the worker, then remove every job's files."""
        self._worker.join(timeout)
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ---- the worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        while True:
            with self._lock:
                while not self._waiting and not self.closing:
                    self._lock.wait()
                if not self._waiting:
                    return
                job = self._running = self._waiting.popleft()
                job.state, job.started = "rendering", time.monotonic()
            self._changed_all()  # everyone behind moved up
            try:
                self._render(job)
            except JobCancelled as stop:
                job.fail(str(stop), 503)
            except EmoError as err:
                job.fail(str(err), 422)
            except Exception as err:  # a bug or a broken model: the job fails, the server goes on
                logger.exception("render %s failed", job.id)
                job.fail(f"the render failed: {type(err).__name__}: {err}", 500)
            with self._lock:
                self._running = None
                self._retire(job)
            job.changed()

    def _render(self, job: Job) -> None:
        inputs, config = job.inputs, self.pipeline.config
        piece = config.audio.sample_rate  # the file is all here: hand it over a second at a time
        pieces = (inputs.waveform[i:i + piece] for i in range(0, inputs.waveform.size, piece))
        frames_of = self.pipeline.stream(inputs.reference, pieces, job.settings, progress=_Progress(job))
        with contextlib.closing(frames_of), \
                VideoWriter(job.video, config.fps, config.resolution, inputs.native_audio, inputs.native_rate) as video:
            for frames in frames_of:
                video.write(frames)
                job.windows.append([jpeg(frame) for frame in frames])
                if job.first_frames is None:
                    job.first_frames = time.monotonic()
                    computed = self.pipeline.reference_cache.last_source == "computed"
                    job.reference = "computed" if computed else "cached"
                job.frames_done += len(frames)
                job.changed()
                if job.cancel_reason is not None:
                    raise JobCancelled(job.cancel_reason)
        job.state, job.finished, job.inputs = "done", time.monotonic(), None

    def _retire(self, job: Job) -> None:
        """`job` is over: keep it for the page, dropping the oldest beyond `keep_finished` (lock held);
        a pinned job stays until its request drops it."""
        if job.pinned:
            return
        self._finished.append(job)
        while len(self._finished) > self.keep_finished:
            old = self._finished.popleft()
            self._jobs.pop(old.id, None)
            old.windows = []
            shutil.rmtree(old.directory, ignore_errors=True)

    def _changed_all(self, extra: list[Job] = ()) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in {*jobs, *extra}:
            job.changed()

"""Rich progress bar for renders: windows, denoising steps and frames per second."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RenderProgress:
    """Context manager the pipeline advances per step and per window; a no-op when disabled."""

    def __init__(self, total_frames: int, num_windows: int, steps: int, enabled: bool = True):
        self.enabled = enabled
        self.frames = 0
        self.started = time.perf_counter()
        if not enabled:
            return
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False)
        self.windows = self.progress.add_task("windows", total=num_windows, rate="")
        self.steps = self.progress.add_task("steps  ", total=steps, rate="")
        self.frames_task = self.progress.add_task("frames ", total=total_frames, rate="")

    def __enter__(self) -> "RenderProgress":
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)

    def advance_step(self) -> None:
        if self.enabled:
            self.progress.advance(self.steps)

    def advance_window(self, frames: int) -> None:
        self.frames += frames
        if not self.enabled:
            return
        fps = self.frames / max(time.perf_counter() - self.started, 1e-9)
        self.progress.advance(self.windows)
        self.progress.reset(self.steps)
        self.progress.update(self.frames_task, advance=frames, rate=f"{fps:.2f} frames/s")

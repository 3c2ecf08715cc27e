"""Rich progress bars: renders (windows, denoising steps, frames per second) and the base that
engine builds share (a rich Progress that is a no-op when disabled)."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn


class OptionalProgress:
    """Context manager around a rich Progress with `columns`; with enabled=False it shows nothing
    (subclasses check `self.enabled` before touching `self.progress`)."""

    def __init__(self, enabled: bool, *columns: ProgressColumn):
        self.enabled = enabled
        if enabled:
            self.progress = Progress(*columns, transient=False)

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


class RenderProgress(OptionalProgress):
    """The pipeline advances it per step and per window."""

    def __init__(self, total_frames: int, num_windows: int, steps: int, enabled: bool = True):
        super().__init__(enabled, TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
        self.frames = 0
        self.started = time.perf_counter()
        if not enabled:
            return
        self.windows = self.progress.add_task("windows", total=num_windows, rate="")
        self.steps = self.progress.add_task("steps  ", total=steps, rate="")
        self.frames_task = self.progress.add_task("frames ", total=total_frames, rate="")

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

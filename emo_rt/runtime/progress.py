"""Progress bars: the one rich bar every long command builds (`progress_bar`), and the render
progress the window loop advances (`RenderProgress`: frames with their rate, and the denoising
steps of the current window)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(*fields: str, enabled: bool = True, console: Console | None = None) -> Progress:
    """description, bar, done/total, one text column per task field in `fields` (the caller passes
    them already formatted), elapsed and remaining time. Disabled, it shows nothing."""
    columns = [TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
               *(TextColumn(f"{{task.fields[{name}]}}") for name in fields), TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=not enabled)


class RenderProgress:
    """Frames rendered (with frames/s) and the current window's denoising steps. The window loop
    calls `advance_step` and `advance_window`; `stage(name)` relabels the frames bar (eval renders
    several videos under one bar)."""

    def __init__(self, total_frames: int, steps: int, enabled: bool = True, label: str = "frames"):
        self.progress = progress_bar("rate", enabled=enabled)
        self.enabled = enabled
        self.total_frames = total_frames
        self.frames = 0
        self.started = time.perf_counter()
        self.frames_task = self.progress.add_task(label, total=total_frames, rate="")
        self.steps_task = self.progress.add_task("  steps", total=steps, rate="")

    def __enter__(self) -> "RenderProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def stage(self, name: str) -> None:
        self.progress.update(self.frames_task, description=name)

    def advance_step(self) -> None:
        self.progress.advance(self.steps_task)

    def advance_window(self, frames: int) -> None:
        self.frames += frames
        fps = self.frames / max(time.perf_counter() - self.started, 1e-9)
        # the steps row restarts for the next window, and goes once the last frame is in
        self.progress.reset(self.steps_task, visible=self.frames < self.total_frames)
        self.progress.update(self.frames_task, advance=frames, rate=f"{fps:.2f} frames/s")

    def print(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text)

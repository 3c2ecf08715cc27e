"""The render progress: frames with their rate, and the current window's steps, a row that goes
once the last frame is in (it used to stay behind at "0/2" after every render)."""

from __future__ import annotations

from emo_rt.runtime.progress import RenderProgress


def test_steps_row_restarts_each_window_and_goes_after_the_last_frame():
    progress = RenderProgress(total_frames=12, steps=2, enabled=False)
    frames, steps = progress.progress.tasks
    with progress:
        progress.advance_step()
        progress.advance_step()
        assert steps.completed == 2
        progress.advance_window(8)
        assert frames.completed == 8
        assert steps.completed == 0 and steps.visible  # the next window's steps, from 0
        progress.advance_step()
        progress.advance_window(4)
        assert frames.completed == 12
        assert not steps.visible

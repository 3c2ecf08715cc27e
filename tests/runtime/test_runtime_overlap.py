"""Stage overlap: the same frames as the sequential loop, real concurrency, bounded look-ahead,
errors and early stops handed across the thread, and the guidance lever (one batch or two passes)."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import torch

from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.components import TorchComponents
from emo_rt.runtime.overlap import Overlapped
from emo_rt.schedulers import noise_schedule

GUIDED = RenderSettings(steps=2, cfg=2.5, seed=5)


def frames_of(model, inputs, settings, frames=None):
    pipe = EmoPipeline(TorchComponents(model), noise_schedule(None))
    waveform = inputs.waveform if frames is None else inputs.waveform[: frames * 16000 // model.config.fps]
    return np.concatenate(list(pipe(inputs.reference, waveform, settings)))


def test_overlapped_render_gives_the_sequential_frames_bitwise(model, inputs):
    sequential = frames_of(model, inputs, RenderSettings(steps=2, cfg=2.5, seed=5, overlap=False))
    overlapped = frames_of(model, inputs, GUIDED)
    assert sequential.shape == (25, 128, 128, 3)  # four windows of 8, the last one trimmed
    assert np.array_equal(sequential, overlapped)


def test_window_k_plus_1_is_produced_while_window_k_is_consumed():
    started = [threading.Event() for _ in range(3)]

    def produce(cancelled):
        for k in range(3):
            started[k].set()
            yield torch.full((1,), float(k))

    with Overlapped(produce) as windows:
        first = next(windows)
        # the consumer holds window 0; the worker must already be on window 1 (no timing involved:
        # a sequential loop would never start it before the consumer asks for it)
        assert started[1].wait(timeout=30)
        assert [first.item(), *(w.item() for w in windows)] == [0.0, 1.0, 2.0]


def test_the_worker_runs_at_most_depth_plus_one_windows_ahead():
    produced = []

    def produce(cancelled):
        for k in range(10):
            produced.append(k)
            yield torch.zeros(1)

    windows = Overlapped(produce, depth=2)
    deadline = time.monotonic() + 30
    while len(produced) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # give a broken bound the chance to show
    assert len(produced) == 3  # two in the queue, one waiting to be put: memory stays flat
    windows.close()
    assert not windows._thread.is_alive()


def test_a_worker_error_is_raised_in_the_consumer():
    def produce(cancelled):
        yield torch.zeros(1)
        raise RuntimeError("denoiser failed")

    windows = Overlapped(produce)
    next(windows)
    with pytest.raises(RuntimeError, match="denoiser failed"):
        next(windows)
    assert not windows._thread.is_alive()


def test_closing_early_cancels_the_denoising_and_ends_the_worker(model, inputs):
    pipe = EmoPipeline(TorchComponents(model), noise_schedule(None))
    steps = {"n": 0}
    real = pipe.components.denoise

    def counting(*args):
        steps["n"] += 1
        return real(*args)

    pipe.components.denoise = counting
    stream = pipe(inputs.reference, inputs.waveform, RenderSettings(steps=3, cfg=1.0))
    next(stream)  # window 0 decoded; the worker is denoising window 1 (or waits to hand it over)
    stream.close()
    alive = [t for t in threading.enumerate() if t.name == "emo-rt-denoise"]
    assert alive == []
    assert steps["n"] < 4 * 3  # the remaining windows were never denoised


def test_guidance_as_two_passes_matches_the_batched_pair(model, inputs):
    window = model.config.num_frames  # one window is enough here
    batched = frames_of(model, inputs, GUIDED, window)
    two_passes = frames_of(model, inputs, RenderSettings(steps=2, cfg=2.5, seed=5, batch_guidance=False), window)
    unguided = frames_of(model, inputs, RenderSettings(steps=2, cfg=1.0, seed=5), window)
    assert batched.shape[0] == window
    difference = np.abs(batched.astype(int) - two_passes).max()
    assert difference <= 2  # same maths, other GEMM shapes: rounding only
    assert np.abs(batched.astype(int) - unguided).max() > 10 * max(difference, 1)  # control: guidance matters


def test_the_worker_stream_waits_on_the_caller_stream_before_the_worker_starts(monkeypatch):
    """CPU stand-ins for torch.cuda's streams record the order: the worker's stream must wait on
    the creating thread's current stream before the worker thread starts (later would race it)."""
    events: list = []
    caller = object()

    class WorkerStream:
        def __init__(self, device):
            events.append(("stream", str(device)))

        def wait_stream(self, other):
            events.append(("wait", "caller" if other is caller else other))

    def current_stream(device=None):
        events.append(("current_stream", str(device)))
        return caller

    real_start = threading.Thread.start

    def recording_start(thread):
        if thread.name == "emo-rt-denoise":
            events.append(("start",))
        real_start(thread)

    monkeypatch.setattr(torch.cuda, "Stream", WorkerStream)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(threading.Thread, "start", recording_start)

    def produce(cancelled):
        events.append(("produce",))
        return iter(())

    with Overlapped(produce, device="cuda") as windows:
        assert list(windows) == []
    assert events == [("stream", "cuda"), ("current_stream", "cuda"), ("wait", "caller"), ("start",),
                      ("produce",)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA stream/event hand-over needs a GPU")
def test_cuda_overlap_hands_windows_over_with_events():
    def produce(cancelled):
        for k in range(4):
            x = torch.full((1 << 20,), float(k), device="cuda")
            yield (x @ torch.ones(1 << 20, device="cuda")).reshape(1)  # work on the worker's stream

    with Overlapped(produce, device="cuda") as windows:
        values = [w.item() for w in windows]
    assert values == [0.0, 2.0**20, 2 * 2.0**20, 3 * 2.0**20]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="stream ordering needs a GPU")
def test_cuda_worker_stream_waits_for_work_queued_before_it_started():
    """A tensor written on the creating thread's stream (behind a ~1 s busy kernel) is read by the
    worker on its own stream: without the wait the worker reads it before the write lands."""
    x = torch.zeros(1 << 20, device="cuda")
    torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU time on the caller's stream, then the write
    x.fill_(1.0)

    def produce(cancelled):
        yield x.clone()  # on the worker's stream

    with Overlapped(produce, device="cuda") as windows:
        (copy,) = list(windows)
    assert copy.min().item() == 1.0


def test_overlap_pays_only_where_the_stages_get_their_own_cores():
    from emo_rt.runtime.overlap import overlap_pays

    assert overlap_pays("cuda", threads_per_stage=8, cores=2)  # streams, not cores
    assert overlap_pays("cpu", threads_per_stage=1, cores=2)
    assert not overlap_pays("cpu", threads_per_stage=2, cores=2)  # both pools on the same cores
    assert overlap_pays("cpu", threads_per_stage=4, cores=16)

"""Stage overlap for long renders: the denoising of window k+1 runs in a worker thread while the
caller decodes and encodes window k. A bounded queue (`depth` windows) keeps memory flat; on CUDA
the worker runs on its own stream, which first waits for the creating thread's stream, and hands
each window over with an event.

    produce = functools.partial(pipeline.denoised_windows, reference, waveform, settings, progress)
    with Overlapped(produce, depth=1, device=device) as windows:
        for latents in windows:      # (k, C, h, w), ready to use on the caller's stream
            frames = pipeline.decode_window(latents)
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


def overlap_pays(device: torch.device | str, threads_per_stage: int, cores: int | None = None) -> bool:
    """Whether denoising beside decoding can be faster than one after the other. On CUDA yes (two
    streams). On CPU only when each stage's threads fit in half the cores: otherwise the two stages'
    thread pools take turns on the same cores (2-core box, quiet: 2 threads each -> 1.07x slower
    than sequential; 1 thread each -> 0.70x of the sum of the stages)."""
    if torch.device(device).type == "cuda":
        return True
    cores = cores or os.cpu_count() or 1
    return 2 * threads_per_stage <= cores


_POLL_SECONDS = 0.1  # how often a blocked worker looks whether the consumer has gone


@dataclass(frozen=True)
class _Handoff:
    latents: torch.Tensor
    ready: torch.cuda.Event | None  # recorded on the worker's stream after `latents` was written


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_DONE = object()


class Overlapped:
    """Iterator over what `produce(cancelled)` yields, produced in a worker thread at most `depth`
    items ahead of the consumer. `produce` should return soon after `cancelled()` turns true (the
    consumer stopped early); an exception in the worker is raised in the consumer. Closed at
    exhaustion and on error; a consumer that may stop early closes it (`with Overlapped(...)`)."""

    def __init__(self, produce: Callable[[Callable[[], bool]], Iterator[torch.Tensor]], depth: int = 1,
                 device: torch.device | str = "cpu"):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.device = torch.device(device)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self._stream is not None:
            # the worker's stream starts after everything this thread has queued so far (weight
            # uploads, cached reference features): streams are otherwise unordered
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
        self._thread = threading.Thread(target=self._work, args=(produce,), name="emo-rt-denoise", daemon=True)
        self._thread.start()

    # ---- worker side --------------------------------------------------------------------------
    def _put(self, item: object) -> bool:
        """Block until the queue takes `item` or the consumer has gone (False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, produce) -> None:
        items = None
        try:
            with torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext():
                items = produce(self._stop.is_set)
                for latents in items:
                    ready = None
                    if self._stream is not None:
                        ready = torch.cuda.Event()
                        ready.record(self._stream)
                    if not self._put(_Handoff(latents, ready)):
                        return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))
        finally:
            if hasattr(items, "close"):
                items.close()

    # ---- consumer side ------------------------------------------------------------------------
    def __iter__(self) -> "Overlapped":
        return self

    def __next__(self) -> torch.Tensor:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        if item.ready is not None:  # CUDA: the caller's stream waits for the worker's, not the host
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(item.ready)
            item.latents.record_stream(stream)  # the allocator must not reuse it under the caller
        return item.latents

    def close(self) -> None:
        """Stop the worker (it finishes its current denoising step) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a worker waiting on a full queue
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=_POLL_SECONDS)

    def __enter__(self) -> "Overlapped":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

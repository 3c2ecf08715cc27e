"""CUDA graphs for fixed-shape calls: one graph per input signature, captured right after an eager
call of that signature, replayed on the caller's stream; where capture fails, that signature runs
without a graph (one warning). Used by the TensorRT backend's step engine and, opt-in, by the torch
backend's denoising step (`GraphedComponents`).

Capture runs with capture_error_mode="thread_local": the overlap worker (emo_rt.runtime.overlap)
captures while the caller's thread decodes, and under "global" the caller's cudaMalloc or
synchronisation during the capture would be an error (torch.cuda.graph docs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
CAPTURE_ERROR_MODE = "thread_local"
# (launch) -> (replay, what launch() returned while captured): the capture primitive. On CUDA
# `capture_cuda_graph`; tests on CPU pass a stand-in with the same contract.
Capture = Callable[[Callable[[], T]], tuple[Callable[[], None], T]]


def capture_cuda_graph(launch: Callable[[], T]) -> tuple[Callable[[], None], T]:
    """Capture the CUDA work `launch()` enqueues on the current stream into a graph. Returns the
    graph's replay (enqueues it on the then-current stream) and launch's result: tensors it
    returns are the graph's static outputs, rewritten by every replay. Raises where the work cannot
    be captured (host synchronisation, allocation outside the graph's pool, a non-capturable op)."""
    caller = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(caller)  # the graph's inputs were written on the caller's stream
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side, capture_error_mode=CAPTURE_ERROR_MODE):
        result = launch()
    caller.wait_stream(side)
    return graph.replay, result  # the bound method keeps the graph (and its memory pool) alive


@dataclass(frozen=True)
class Captured(Generic[T]):
    replay: Callable[[], None]
    result: T  # what the launch returned during capture: its tensors are the static outputs


class GraphCache(Generic[T]):
    """The graphs of one callable, by input signature (any hashable key). A signature whose capture
    failed is remembered, warned about once, and never captured again."""

    def __init__(self, name: str, capture: Capture = capture_cuda_graph):
        self.name = name
        self._capture = capture
        self._graphs: dict[Hashable, Captured[T]] = {}
        self._failed: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._graphs)

    def get(self, key: Hashable) -> Captured[T] | None:
        return self._graphs.get(key)

    def failed(self, key: Hashable) -> bool:
        return key in self._failed

    def capture(self, key: Hashable, launch: Callable[[], T]) -> Captured[T] | None:
        """Capture `launch` for `key`; None (after one warning) where that fails. Call it after an
        eager launch of the same signature, so lazy set-up (cuBLAS handles, kernel compilation,
        TensorRT's per-shape state) happens outside the capture."""
        try:
            replay, result = self._capture(launch)
        except Exception as error:  # noqa: BLE001 -- reported, and this signature runs eagerly
            self._failed.add(key)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            warnings.warn(f"{self.name}: CUDA graph capture failed for {_describe(key)} "
                          f"({type(error).__name__}: {reason[:200]}); running it without a graph",
                          RuntimeWarning, stacklevel=3)
            return None
        captured = Captured(replay, result)
        self._graphs[key] = captured
        return captured

    def clear(self) -> None:
        self._graphs.clear()
        self._failed.clear()


def _describe(key: Hashable) -> str:
    text = repr(key)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class _StaticStep:
    inputs: list[torch.Tensor]  # the graph reads these: each call copies its inputs in
    captured: Captured[torch.Tensor]


class GraphedComponents:
    """A `Components` whose `denoise` replays one CUDA graph per input signature (the torch
    backend's step has fixed shapes per guidance batch: one graph for batch 1, one for batch 2);
    every other method and attribute is the wrapped components'.

    A call copies its inputs into the signature's static buffers, replays, and returns a copy of
    the static output (the next replay overwrites it). The graphs read the weights' memory, so
    in-place weight updates reach them, but what was derived from the weights while capturing
    (the Triton processors' position tables) would not: a change of any parameter's version drops
    the graphs, and they are captured again."""

    def __init__(self, components, capture: Capture = capture_cuda_graph):
        self.inner = components
        self.config = components.config
        self.device = getattr(components, "device", torch.device("cpu"))
        self.name = f"{components.name}+cuda-graph"
        self.graphs: GraphCache[torch.Tensor] = GraphCache(f"{components.name} denoise", capture)
        self._steps: dict[tuple, _StaticStep] = {}
        self._weights_version = self._version()

    def __getattr__(self, name: str):  # only for what this wrapper does not define itself
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _version(self) -> int:
        """Sum of the in-place version counters of the Backbone's parameters (they only grow)."""
        model = getattr(self.inner, "model", None)
        backbone = getattr(model, "backbone", model)
        return 0 if backbone is None else sum(p._version for p in backbone.parameters())

    @torch.inference_mode()
    def denoise(self, noisy_latents, timestep, reference_features, motion_features, audio_tokens,
                speed_tokens, face_latents, anchor_latents=None) -> torch.Tensor:
        flat = [noisy_latents, timestep, *reference_features, *motion_features, audio_tokens,
                speed_tokens, face_latents, *([] if anchor_latents is None else [anchor_latents])]
        counts = (len(reference_features), len(motion_features))
        key = (counts, tuple((tuple(x.shape), x.dtype) for x in flat))
        version = self._version()
        if version != self._weights_version:
            self.graphs.clear()
            self._steps.clear()
            self._weights_version = version
        if self.graphs.failed(key):
            return self.inner.denoise(*_unflatten(flat, counts))
        step = self._steps.get(key)
        if step is not None:
            for buffer, x in zip(step.inputs, flat):
                buffer.copy_(x)
            step.captured.replay()
            return step.captured.result.clone()
        # first call of this signature: static buffers, an eager call (lazy set-up, and this
        # call's result), then the capture
        inputs = [torch.empty(x.shape, dtype=x.dtype, device=self.device).copy_(x) for x in flat]

        def launch() -> torch.Tensor:
            return self.inner.denoise(*_unflatten(inputs, counts))

        result = launch()
        captured = self.graphs.capture(key, launch)
        if captured is not None:
            self._steps[key] = _StaticStep(inputs, captured)
        return result


def _unflatten(flat: list[torch.Tensor], counts: tuple[int, int]) -> tuple:
    """[latents, timestep, *reference, *motion, audio, speed, face(, anchor)] -> Components.denoise's
    arguments."""
    n_ref, n_motion = counts
    reference = list(flat[2: 2 + n_ref])
    motion = list(flat[2 + n_ref: 2 + n_ref + n_motion])
    audio, speed, face, *anchor = flat[2 + n_ref + n_motion:]
    return flat[0], flat[1], reference, motion, audio, speed, face, *anchor

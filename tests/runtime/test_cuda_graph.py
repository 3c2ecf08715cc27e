"""CUDA graphs of the torch backend's denoising step (GraphedComponents) and the capture primitive.

On CPU the capture primitive is replaced by a stand-in with a graph's contract (the replay writes
into the tensor the launch returned at capture, reading the static inputs as they are at replay),
which tests what GraphedComponents itself does: static inputs per signature, outputs that do not
alias, alternating guidance batch sizes, the fallback on a failed capture, recapture after a weight
change, and a render through the pipeline. The real capture runs in the CUDA tests below.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch

from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.components import TorchComponents
from emo_rt.runtime.cuda_graph import CAPTURE_ERROR_MODE, GraphedComponents, capture_cuda_graph
from emo_rt.schedulers import noise_schedule

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a CUDA device")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two threads wait on each other (30x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_model(tiny_config):
    """The tiny preset at 32x32 (4x4 latents): every layer runs, at a fraction of the cost."""
    from emo_rt.models import EmoModel

    torch.manual_seed(1234)
    return EmoModel(dataclasses.replace(tiny_config, resolution=32)).eval()


class ReplayingCapture:
    """CPU stand-in for capture_cuda_graph: counts captures, optionally fails them."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures, self.replays = fail, 0, 0

    def __call__(self, launch):
        self.captures += 1
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        result = launch()

        def replay() -> None:
            self.replays += 1
            result.copy_(launch())

        return replay, result


def step_inputs(components, batch: int, seed: int) -> tuple:
    """Arguments of Components.denoise for `batch` items (the guidance pair when 2)."""
    config = components.config
    f, n, h, c = config.num_frames, config.num_motion_frames, config.latent_size, config.vae.latent_channels
    g = torch.Generator().manual_seed(seed)
    device = components.device
    with torch.inference_mode():
        reference = components.reference_features(torch.randn(batch, c, h, h, generator=g).to(device))
        motion = components.motion_features(torch.randn(batch, n, c, h, h, generator=g).to(device))
    return (torch.randn(batch, c, f, h, h, generator=g).to(device), torch.full((batch,), 500 + seed),
            reference, motion,
            torch.randn(batch, f, config.audio.num_tokens, config.audio.token_dim, generator=g).to(device),
            torch.randn(batch, f, config.speed.num_tokens, config.speed.token_dim, generator=g).to(device),
            torch.randn(batch, c, h, h, generator=g).to(device))


BATCHES = [2, 2, 1, 2, 1, 1]  # guidance pair, then separate passes, switching between replays


def test_replays_give_the_eager_step_for_alternating_batch_sizes(small_model):
    eager = TorchComponents(small_model)
    capture = ReplayingCapture()
    graphed = GraphedComponents(eager, capture)
    kept = []
    for call, batch in enumerate(BATCHES):
        args = step_inputs(eager, batch, seed=call)
        expected = eager.denoise(*args)
        result = graphed.denoise(*args)
        assert torch.equal(result, expected), f"call {call} (batch {batch})"
        kept.append((result, expected))
    assert capture.captures == 2 and capture.replays == len(BATCHES) - 2
    for result, expected in kept:  # a later replay never overwrote what an earlier call returned
        assert torch.equal(result, expected)
    assert graphed.name == "torch+cuda-graph" and graphed.config is eager.config and graphed.model is small_model


def test_a_failed_capture_runs_that_signature_eagerly_and_warns_once(small_model):
    eager = TorchComponents(small_model)
    capture = ReplayingCapture(fail=True)
    graphed = GraphedComponents(eager, capture)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed") as caught:
        for call, batch in enumerate(BATCHES):
            args = step_inputs(eager, batch, seed=call)
            assert torch.equal(graphed.denoise(*args), eager.denoise(*args))
    assert len(caught) == 2 and capture.captures == 2  # once per batch size, never retried


def test_a_weight_change_drops_the_graphs(small_model):
    model = copy.deepcopy(small_model)
    eager = TorchComponents(model)
    capture = ReplayingCapture()
    graphed = GraphedComponents(eager, capture)
    args = step_inputs(eager, 1, seed=0)
    graphed.denoise(*args)
    graphed.denoise(*args)
    assert capture.captures == 1
    with torch.no_grad():
        model.backbone.conv_out.weight.mul_(1.5)  # in place: the version counter moves
    expected = eager.denoise(*args)
    assert torch.equal(graphed.denoise(*args), expected)
    assert capture.captures == 2


def test_a_render_through_graphed_components_gives_the_same_frames(model, inputs):
    settings = RenderSettings(steps=2, cfg=2.5, seed=5)  # overlapped, guidance pair
    waveform = inputs.waveform[: 8 * 16000 // model.config.fps]  # one window
    plain = EmoPipeline(TorchComponents(model), noise_schedule(None))
    capture = ReplayingCapture()
    graphed = EmoPipeline(GraphedComponents(TorchComponents(model), capture), noise_schedule(None))
    expected = np.concatenate(list(plain(inputs.reference, waveform, settings)))
    frames = np.concatenate(list(graphed(inputs.reference, waveform, settings)))
    assert np.array_equal(frames, expected)
    assert capture.captures == 1 and capture.replays == settings.steps - 1


def test_capture_is_thread_local_so_the_caller_thread_may_allocate_meanwhile():
    """The overlap worker captures while the caller decodes: "global" would make that an error."""
    assert CAPTURE_ERROR_MODE == "thread_local"


def test_capture_cuda_graph_orders_its_side_stream_and_passes_the_error_mode(monkeypatch):
    """CPU stand-ins for torch.cuda record what capture_cuda_graph does: the side stream waits on
    the caller's before the capture, the caller's on the side stream after, and the capture gets
    capture_error_mode="thread_local" and the side stream."""
    events: list = []

    class Stream:
        def __init__(self, name: str = "side"):
            self.name = name

        def wait_stream(self, other):
            events.append(("wait", self.name, other.name))

    class Graph:
        def replay(self):
            events.append(("replay",))

    @contextlib.contextmanager
    def graph(cuda_graph, stream=None, capture_error_mode="global", **kwargs):
        events.append(("capture", stream.name, capture_error_mode))
        yield
        events.append(("captured",))

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream("caller"))
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)

    def launch():
        events.append(("launch",))
        return "static output"

    replay, result = capture_cuda_graph(launch)
    replay()
    assert result == "static output"
    assert events == [("wait", "side", "caller"), ("capture", "side", "thread_local"), ("launch",), ("captured",),
                      ("wait", "caller", "side"), ("replay",)]


# ---- on CUDA: the real capture -----------------------------------------------------------------

@needs_cuda
def test_cuda_graph_replays_match_the_eager_step(tiny_model):
    eager = TorchComponents(copy.deepcopy(tiny_model).cuda(), attention="auto")  # Triton kernels on CUDA
    graphed = GraphedComponents(eager)
    for call, batch in enumerate(BATCHES):
        args = step_inputs(eager, batch, seed=call)
        expected = eager.denoise(*args)
        result = graphed.denoise(*args)
        # the same kernels on the same inputs: equal up to cuBLAS choosing other algorithms inside
        # a capture, which would show as fp32 rounding (~1e-6 relative), not as a wrong step
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5, msg=f"call {call} (batch {batch})")
    assert len(graphed.graphs) == 2


@needs_cuda
def test_capture_in_a_worker_thread_leaves_other_threads_free_to_allocate():
    """The overlap worker captures while the caller's thread decodes: under capture mode "global"
    a cudaMalloc on the other thread during the capture is an error; "thread_local" allows it."""
    assert CAPTURE_ERROR_MODE == "thread_local"
    capturing, allocated = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    x = torch.ones(1 << 20, device="cuda")

    def launch():
        capturing.set()
        assert allocated.wait(timeout=60)
        return x * 2

    def worker():
        try:
            replay, result = capture_cuda_graph(launch)
            replay()
            torch.cuda.current_stream().synchronize()
            assert torch.equal(result, x * 2)
        except BaseException as error:  # noqa: BLE001 -- re-raised in the test thread
            errors.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    assert capturing.wait(timeout=60)
    try:
        fresh = torch.empty(int(3e8) + 12345, dtype=torch.uint8, device="cuda")  # a size no cached block has
        fresh.fill_(1)
    finally:
        allocated.set()
        thread.join()
    assert not errors, errors
    assert fresh[-1].item() == 1

"""One ExportSpec per sub-network: input/output names, dtypes and shapes, dynamic dimensions with
their TensorRT min/opt/max, the wrapper module and a sample-input factory. The ONNX exporter, the
TensorRT builder, the manifest and the parity tests all read these; the runtime reads the copy of
each spec's interface that the manifest carries.

Shapes are tuples of ints (static) and dimension names (dynamic, declared in `ExportSpec.dims`).
Only three things vary at render time: the guidance batch of the step network (1 or 2), the audio
length (and the frame count it maps to), and how many images one VAE call takes. Everything else
is fixed by the config, which is what lets TensorRT specialise and the step run as a CUDA graph.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from emo_rt.config import EmoConfig
from emo_rt.digest import json_digest
from emo_rt.export import wrappers
from emo_rt.runtime.backends.manifest import INTERFACE_VERSION

FLOAT = "float"  # dtype placeholder: float32 for fp32 engines, float16 for fp16 engines
PRECISIONS = ("fp32", "fp16", "int8")  # int8: onnxruntime only, fp32 inputs and outputs (export/quantize.py)
# The pipeline encodes audio in chunks of RenderSettings.audio_chunk_seconds (30 s) plus 1 s of
# context on each side: the audio encoder's profile must reach that.
MAX_AUDIO_SECONDS = 32.0
OPT_AUDIO_SECONDS = 10.0  # TensorRT tunes kernels for this length (a typical clip)


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension: TensorRT's min/opt/max, and the size the exporter traces at."""

    name: str
    min: int
    opt: int
    max: int
    sample: int  # >= 2: torch.export specialises sizes 0 and 1

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError(f"dim {self.name}: need 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        if not (max(self.min, 2) <= self.sample <= self.max):
            raise ValueError(f"dim {self.name}: sample {self.sample} must lie in [max(min, 2), max]")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # ints are static, strings name a Dim of the spec
    dtype: str = FLOAT  # FLOAT (the engine precision) or "float32" (stays fp32 in fp16 engines)
    init: str = "normal"  # sample values: normal | uniform (in [-1, 1]) | timestep | mask | speed | zeros

    def resolve(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def dtype_for(self, precision: str) -> str:
        if self.dtype != FLOAT:
            return self.dtype
        return "float16" if precision == "fp16" else "float32"


@dataclass(frozen=True)
class ExportSpec:
    name: str
    wrapper: type[nn.Module]  # wrapper(model) -> module with flat tensor inputs, tuple outputs
    parts: tuple[str, ...]  # EmoModel parts (<part>.safetensors) whose weights the engine holds
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: tuple[Dim, ...] = ()

    @property
    def fixed_shape(self) -> bool:
        """Static shapes only: TensorRT runs it as one CUDA graph."""
        return not self.dims

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def sizes(self, which: str = "sample", **overrides: int) -> dict[str, int]:
        """Dimension sizes: which in {"min", "opt", "max", "sample"}, overridden per name."""
        unknown = set(overrides) - {d.name for d in self.dims}
        if unknown:
            raise KeyError(f"{self.name} has no dims {sorted(unknown)}")
        return {d.name: overrides.get(d.name, getattr(d, which)) for d in self.dims}

    def input_shapes(self, **sizes: int) -> dict[str, tuple[int, ...]]:
        resolved = self.sizes(**sizes)
        return {t.name: t.resolve(resolved) for t in self.inputs}

    def output_shapes(self, **sizes: int) -> dict[str, tuple[int, ...]]:
        resolved = self.sizes(**sizes)
        return {t.name: t.resolve(resolved) for t in self.outputs}

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """TensorRT optimisation profile: (min, opt, max) shape per input that has a dynamic dim."""
        ranges = [self.sizes(which) for which in ("min", "opt", "max")]
        return {t.name: tuple(t.resolve(r) for r in ranges)  # type: ignore[misc]
                for t in self.inputs if any(isinstance(d, str) for d in t.shape)}

    def dynamic_shapes(self) -> list[dict[int, torch.export.Dim]]:
        """torch.export's dynamic_shapes, one entry per input (the same Dim object wherever a name
        recurs, so the exporter knows those axes are equal)."""
        dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max) for d in self.dims}
        return [{axis: dims[d] for axis, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs]

    def sample_inputs(self, precision: str = "fp32", generator: torch.Generator | None = None,
                      **sizes: int) -> tuple[torch.Tensor, ...]:
        """Random inputs of the right shapes, dtypes and value ranges (defaults: the sample sizes)."""
        resolved = self.sizes(**sizes)
        return tuple(_sample(t, t.resolve(resolved), getattr(torch, t.dtype_for(precision)), generator)
                     for t in self.inputs)

    def describe(self) -> dict:
        """Everything declarative, JSON-able: what the manifest stores and the spec hash covers."""
        return {
            "name": self.name,
            "wrapper": f"{self.wrapper.__module__.rsplit('.', 1)[-1]}.{self.wrapper.__qualname__}",
            "parts": list(self.parts),
            "inputs": [_tensor_dict(t) for t in self.inputs],
            "outputs": [_tensor_dict(t) for t in self.outputs],
            "dims": {d.name: {"min": d.min, "opt": d.opt, "max": d.max, "sample": d.sample} for d in self.dims},
            "interface": INTERFACE_VERSION,
        }

    def digest(self) -> str:
        return json_digest(self.describe())


def _tensor_dict(t: TensorSpec) -> dict:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "init": t.init}


def _sample(t: TensorSpec, shape: tuple[int, ...], dtype: torch.dtype,
            generator: torch.Generator | None) -> torch.Tensor:
    if t.init == "normal":
        x = torch.randn(shape, generator=generator)
    elif t.init == "uniform":
        x = torch.rand(shape, generator=generator) * 2 - 1
    elif t.init == "timestep":  # the training schedule's range
        x = torch.randint(0, 1000, shape, generator=generator).float()
    elif t.init == "mask":  # a random axis-aligned box of ones, like io.image.face_mask
        x = torch.zeros(shape)
        side = shape[-1]
        lo = torch.randint(0, side // 2, (2,), generator=generator).tolist()
        x[..., lo[0]: lo[0] + side // 2, lo[1]: lo[1] + side // 2] = 1
    elif t.init == "speed":  # head speed in deg/frame, over the bucket range
        x = torch.rand(shape, generator=generator) * 4
    elif t.init == "zeros":
        x = torch.zeros(shape)
    else:
        raise ValueError(f"unknown init {t.init!r} for {t.name}")
    return x.to(dtype)


@functools.lru_cache(maxsize=8)
def feature_shapes(config: EmoConfig) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per-layer shapes of the ReferenceNet's outputs without a batch axis: reference features
    (L_i, C_i) and motion features (C_j, h_j, w_j), from a forward on the meta device (no memory)."""
    from emo_rt.models import ReferenceNet

    h, c, n = config.latent_size, config.unet.in_channels, max(config.num_motion_frames, 1)
    with torch.device("meta"), torch.no_grad():
        net = ReferenceNet(config)
        reference = net.reference_features(torch.empty(1, c, h, h))
        motion = net.motion_features(torch.empty(1, n, c, h, h))
    return [tuple(x.shape[1:]) for x in reference], [tuple(x.shape[2:]) for x in motion]


def receptive_field(config: EmoConfig) -> int:
    """Samples wav2vec2's conv feature extractor needs for one output feature."""
    field, jump = 1, 1
    for kernel, stride in zip(config.audio.conv_kernel, config.audio.conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def export_specs(config: EmoConfig, max_audio_seconds: float = MAX_AUDIO_SECONDS) -> dict[str, ExportSpec]:
    """The sub-networks of one render, in the order the pipeline first runs them."""
    if config.num_motion_frames < 1:
        raise ValueError("engines need num_motion_frames >= 1 (the motion network has no output otherwise)")
    f, n, h, res = config.num_frames, config.num_motion_frames, config.latent_size, config.resolution
    c_lat, a, s = config.vae.latent_channels, config.audio, config.speed
    reference, motion = feature_shapes(config)
    frame_samples = math.ceil(a.sample_rate / config.fps)

    audio_frames = Dim("frames", min=1, opt=round(OPT_AUDIO_SECONDS * config.fps),
                       max=math.ceil(max_audio_seconds * config.fps), sample=25)
    samples = Dim("samples", min=max(receptive_field(config), frame_samples),
                  opt=round(OPT_AUDIO_SECONDS * a.sample_rate),
                  max=math.ceil(max_audio_seconds * a.sample_rate), sample=a.sample_rate)
    # the pipeline projects one window (f frames + m context frames each side) per call
    audio_window = Dim("frames", min=1, opt=f + 2 * a.context_frames, max=audio_frames.max,
                       sample=f + 2 * a.context_frames)
    speed_window = Dim("frames", min=1, opt=f + 2 * s.context_frames, max=audio_frames.max,
                       sample=f + 2 * s.context_frames)
    batch = Dim("batch", min=1, opt=2, max=2, sample=2)  # 2 = the classifier-free guidance pair
    encode_images = Dim("images", min=1, opt=1, max=f, sample=2)  # the reference image
    decode_images = Dim("images", min=1, opt=f, max=f, sample=2)  # one window's frames

    ref_names = [f"reference_feature_{i}" for i in range(len(reference))]
    motion_names = [f"motion_feature_{j}" for j in range(len(motion))]
    num_layers, hidden = len(a.feature_layers), a.hidden_size
    rows = a.num_feature_rows  # the projector also reads the host-side prosody row
    specs = [
        ExportSpec("vae_encoder", wrappers.VaeEncoder, ("vae",),
                   (TensorSpec("images", ("images", 3, res, res), init="uniform"),),
                   (TensorSpec("latents", ("images", c_lat, h, h)),), (encode_images,)),
        ExportSpec("reference", wrappers.ReferenceFeatures, ("reference_net",),
                   (TensorSpec("reference_latents", (1, c_lat, h, h)),),
                   tuple(TensorSpec(name, (1, *shape)) for name, shape in zip(ref_names, reference))),
        ExportSpec("face_locator", wrappers.FaceLatents, ("face_locator",),
                   (TensorSpec("face_mask", (1, 1, res, res), init="mask"),),
                   (TensorSpec("face_latents", (1, c_lat, h, h)),)),
        ExportSpec("audio_encoder", wrappers.AudioFrames, ("audio_encoder",),
                   (TensorSpec("waveform", (1, "samples")), TensorSpec("frame_grid", ("frames",), init="zeros")),
                   (TensorSpec("audio_features", (1, "frames", num_layers, hidden)),), (samples, audio_frames)),
        ExportSpec("audio_projector", wrappers.AudioTokens, ("audio_projector",),
                   (TensorSpec("audio_features", (1, "frames", rows, hidden)),),
                   (TensorSpec("audio_tokens", (1, "frames", a.num_tokens, a.token_dim)),), (audio_window,)),
        ExportSpec("speed_encoder", wrappers.SpeedTokens, ("speed_encoder",),
                   (TensorSpec("head_speed", (1, "frames"), init="speed"),),
                   (TensorSpec("speed_tokens", (1, "frames", s.num_tokens, s.token_dim)),), (speed_window,)),
        ExportSpec("motion", wrappers.MotionFeatures, ("reference_net",),
                   (TensorSpec("motion_latents", (1, n, c_lat, h, h)),),
                   tuple(TensorSpec(name, (1, n, *shape)) for name, shape in zip(motion_names, motion))),
        ExportSpec("step", wrappers.DenoiseStep, ("backbone",),
                   (TensorSpec("noisy_latents", ("batch", c_lat, f, h, h)),
                    TensorSpec("timestep", ("batch",), dtype="float32", init="timestep"),
                    *(TensorSpec(name, ("batch", *shape)) for name, shape in zip(ref_names, reference)),
                    *(TensorSpec(name, ("batch", n, *shape)) for name, shape in zip(motion_names, motion)),
                    TensorSpec("audio_tokens", ("batch", f, a.num_tokens, a.token_dim)),
                    TensorSpec("speed_tokens", ("batch", f, s.num_tokens, s.token_dim)),
                    TensorSpec("face_latents", ("batch", c_lat, h, h)),
                    *((TensorSpec("anchor_latents", ("batch", c_lat, h, h)),) if config.anchor != "none" else ())),
                   (TensorSpec("prediction", ("batch", c_lat, f, h, h)),), (batch,)),
        ExportSpec("vae_decoder", wrappers.VaeDecoder, ("vae",),
                   (TensorSpec("latents", ("images", c_lat, h, h)),),
                   (TensorSpec("images", ("images", 3, res, res)),), (decode_images,)),
    ]
    return {spec.name: spec for spec in specs}

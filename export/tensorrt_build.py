"""TensorRT engine builds (tensorrt 10 Python API), from the ONNX files onnx_export.py writes.

- Every network is strongly typed: each layer runs at the precision the ONNX graph states (fp16
  engines are parsed from the fp16 export, so they compute what torch fp16 computes); TensorRT
  does not pick precisions itself. TensorRT 10 takes this as a flag, TensorRT 11 only builds so
  (its weak-typing flags such as BuilderFlag.FP16 are gone), so one code path serves both.
- TF32 is disabled, so fp32 engines are comparable to torch fp32.
- One optimisation profile per engine, from the spec's min/opt/max (only dynamic inputs).
- The timing cache is shared by all builds of one TensorRT version on one device and saved after
  every build, so rebuilding after a weights change re-times nothing; a cache TensorRT refuses
  (`set_timing_cache` returns False) is replaced by an empty one, with a warning.

`tensorrt` is imported inside the functions that need it: the rest runs and is tested on CPU.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

from emo_rt.errors import EmoError
from emo_rt.export.specs import ExportSpec
from emo_rt.io.files import write_bytes_atomic

WORKSPACE_BYTES = 8 << 30  # upper bound on scratch memory a tactic may use
OPTIMIZATION_LEVEL = 3  # TensorRT's default; 5 searches longer for a few % more


# ONNX ops the TensorRT 10 parser imports (onnx-tensorrt docs/operators.md), restricted to the
# kinds a diffusion UNet / VAE / wav2vec2 export emits; anything else in a graph is a red flag.
PARSER_OPS = frozenset("""
    Abs Add And ArgMax AveragePool BatchNormalization Cast CastLike Ceil Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos CumSum DepthToSpace Div Dropout Einsum Elu Equal Erf Exp Expand
    Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool Greater GreaterOrEqual
    GroupNormalization Identity If InstanceNormalization IsNaN LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mod Mul Neg Not Or Pad Pow Range
    Reciprocal ReduceL2 ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize
    Round ScatterElements ScatterND Shape Sigmoid Sign Sin Size Slice Softmax Softplus SpaceToDepth Split
    Sqrt Squeeze Sub Sum Tanh Tile Transpose Trilu Unsqueeze Where
""".split())


def unsupported_ops(model_proto) -> dict[str, int]:
    """Ops of `model_proto` outside PARSER_OPS or the default ONNX domain, with their counts."""
    found: dict[str, int] = {}
    for node in model_proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in PARSER_OPS:
            key = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
            found[key] = found.get(key, 0) + 1
    return found


class TensorRTUnavailable(EmoError):
    """tensorrt (or a CUDA device) is missing: engines for --backend tensorrt cannot be built."""


# What the builder is told besides the network (precision comes from the ONNX graph's types): part
# of every TensorRT engine's identity, so changing any of these rebuilds the plans.
BUILDER_OPTIONS = {"strongly_typed": True, "tf32": False, "workspace_bytes": WORKSPACE_BYTES,
                   "optimization_level": OPTIMIZATION_LEVEL}


def apply_profile(profile, spec: ExportSpec) -> int:
    """Set `spec`'s min/opt/max on a tensorrt.IOptimizationProfile (duck-typed: any object with
    set_shape(name, min, opt, max)). Returns the number of inputs set."""
    shapes = spec.profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    return len(shapes)


def timing_cache_path(out_dir: Path, trt_version: str, device: str) -> Path:
    """One timing cache per TensorRT version and device (tactic timings are valid for no other)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    return Path(out_dir) / f"timing-cache.trt{trt_version}.{slug}.bin"


def tensorrt_target() -> tuple[str, str]:
    """(tensorrt version, device name) of this machine, or TensorRTUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("--backend tensorrt needs the tensorrt package and an NVIDIA GPU "
                                  "(pip install 'emo-rt[gpu]'); use --backend onnxruntime here") from None
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("--backend tensorrt needs a CUDA device, and torch sees none; "
                                  "use --backend onnxruntime here")
    return trt.__version__, cuda_device_name()


def cuda_device_name(index: int = 0) -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"


def attach_timing_cache(config, path: Path) -> bool:
    """Attach the timing cache in `path` to a tensorrt.IBuilderConfig (duck-typed: any object with
    create_timing_cache(bytes) and set_timing_cache(cache, ignore_mismatch) -> bool); returns
    whether the file's timings are used. set_timing_cache returns False for a cache it refuses
    (written by another TensorRT version or on another GPU, or damaged): the build then starts from
    an empty cache, with a warning, and rewrites the file; failing to attach even that is an error."""
    blob = path.read_bytes() if path.is_file() else b""
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True
        warnings.warn(f"TensorRT refused the timing cache {path.name} (another TensorRT version or GPU, "
                      "or a damaged file): every tactic is timed afresh and the file is rewritten",
                      RuntimeWarning, stacklevel=2)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise EmoError("TensorRT could not attach an empty timing cache to the builder config")
    return False


def build_engine(onnx_path: Path, plan_path: Path, spec: ExportSpec, timing_cache: Path) -> dict[str, float]:
    """Parse `onnx_path`, build with `spec`'s profile, write `plan_path` (atomically) and the
    updated timing cache. Returns seconds per stage."""
    import tensorrt as trt

    options = BUILDER_OPTIONS
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # STRONGLY_TYPED: required on TensorRT 10, accepted and ignored on 11 (always strongly typed)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    started = time.perf_counter()
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EmoError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    seconds = {"parse": time.perf_counter() - started}

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options["workspace_bytes"])
    config.builder_optimization_level = options["optimization_level"]
    if not options["tf32"]:
        config.clear_flag(trt.BuilderFlag.TF32)
    if not spec.fixed_shape:  # static networks need no profile
        profile = builder.create_optimization_profile()
        apply_profile(profile, spec)
        config.add_optimization_profile(profile)
    attach_timing_cache(config, timing_cache)

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EmoError(f"TensorRT failed to build {spec.name} from {onnx_path.name} (see the log above)")
    seconds["build"] = time.perf_counter() - started
    write_bytes_atomic(plan_path, memoryview(plan))
    write_bytes_atomic(timing_cache, memoryview(config.get_timing_cache().serialize()))
    return seconds

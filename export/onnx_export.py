"""ONNX export of one sub-network: torch.onnx's dynamo exporter (with its optimiser) at an opset
TensorRT 10 parses, then Polygraphy constant folding; external data above protobuf's 2 GiB limit;
fp16 variants.

fp16 variants are exported from the model cast to fp16 (inputs and outputs fp16 too, `timestep`
stays fp32): the graph then says which precision every op runs at, which is what TensorRT's
strongly typed mode builds from, and what onnxruntime's CUDA provider runs.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emo_rt.export.specs import ExportSpec
from emo_rt.io.files import atomic_path

# TensorRT 10.0's ONNX parser takes opsets 9..20 (later 10.x releases more); 18 is the lowest
# opset the dynamo exporter emits natively (lower ones go through the version converter).
OPSET = 18
PROTOBUF_LIMIT = 2**31 - 2**26  # 2 GiB minus headroom for the graph itself
# Fold constant subgraphs (shape arithmetic) but not weight-sized tensors: folding e.g. a weight
# transpose would only duplicate weights; onnxruntime and TensorRT fold those at load/build time.
FOLD_SIZE_THRESHOLD = 1 << 20
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}  # int8: quantised after export


@dataclass
class OnnxExport:
    path: Path
    files: list[Path]  # path, plus path.data for models with external data
    num_nodes: int
    folded: bool  # Polygraphy constant folding ran (not for models with external data)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: export, fold


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def export_onnx(spec: ExportSpec, model: torch.nn.Module, path: str | Path, precision: str = "fp32",
                fold: bool = True, quiet: bool = True, external_data: bool | None = None) -> OnnxExport:
    """Export `spec`'s wrapper around `model` (an EmoModel already in the precision's dtype) to `path`.

    Weights go to `<path>.data` when they would not fit protobuf's 2 GiB (external_data=None), or
    as forced. Raises on any exporter or folding failure (nothing is silently skipped)."""
    import onnx

    path = Path(path)
    dtype = TORCH_DTYPES[precision]
    module = spec.wrapper(model).eval()
    wrong = {p.dtype for p in module.parameters()} - {dtype}
    if wrong:
        raise ValueError(f"{spec.name}: the model holds {sorted(map(str, wrong))} weights, "
                         f"precision {precision} needs {dtype}")
    external = parameter_bytes(module) > PROTOBUF_LIMIT if external_data is None else external_data
    args = spec.sample_inputs(precision, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    with _silenced(quiet), torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=spec.input_names,
            output_names=spec.output_names, dynamic_shapes=_dynamic_shapes(spec, module),
            optimize=True, verbose=False, external_data=external)
    if external:
        return _save_large(spec, program, path, precision, started)
    tmp_dir = path.parent / f".{path.name}.tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        raw = tmp_dir / "raw.onnx"
        program.save(str(raw))
        del program
        seconds = {"export": time.perf_counter() - started}
        started = time.perf_counter()
        model_proto = onnx.load(str(raw))
        if fold:
            from polygraphy.backend.onnx import fold_constants

            with _silenced(quiet):
                model_proto = fold_constants(model_proto, error_ok=False, size_threshold=FOLD_SIZE_THRESHOLD)
        _check_interface(spec, model_proto, precision)
        files = save_onnx(model_proto, path)
        seconds["fold"] = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return OnnxExport(path, files, len(model_proto.graph.node), fold, seconds)


def _save_large(spec: ExportSpec, program, path: Path, precision: str, started: float) -> OnnxExport:
    """Weights beyond protobuf's limit: saved once, straight from the exporter, to `<path>` and
    `<path>.data`. Polygraphy's folding is skipped here: it would load the model back and hold two
    more copies of the weights (an sd15 step network is 5.4 GB in fp32), and the exporter's own
    optimiser has already folded the constants (Polygraphy's pass removes ~5% more shape nodes).
    The file name carries the engine key, so no manifest entry points at it until it is complete."""
    import onnx

    data = path.with_name(path.name + ".data")
    try:
        program.save(str(path), external_data=True)  # the exporter names the data file <path>.data
        del program
        if not data.is_file():
            raise RuntimeError(f"{spec.name}: the exporter did not write {data.name}")
        graph = onnx.load(str(path), load_external_data=False)
        _check_interface(spec, graph, precision)
        onnx.checker.check_model(str(path))  # path-based: works above 2 GiB
    except BaseException:  # a failed check, Ctrl-C, SIGTERM: no unreferenced gigabytes stay behind
        path.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        raise
    return OnnxExport(path, [path, data], len(graph.graph.node), False,
                      {"export": time.perf_counter() - started})


def export_graph(spec: ExportSpec, model: torch.nn.Module, path: str | Path, dynamic: bool = True):
    """The graph alone, for a model on the meta device: the structural check of an export too large
    for this machine (nothing is allocated). The weights become graph inputs without values, after
    the spec's inputs, so the exporter's optimiser (which rewrites e.g. SplitToSequence into Split)
    runs without trying to fold them. Returns the ONNX ModelProto (also saved to `path`)."""
    import onnx
    import onnxscript.optimizer

    module = spec.wrapper(model).eval()
    device = next(module.parameters()).device
    dtype = next(module.parameters()).dtype
    precision = {v: k for k, v in TORCH_DTYPES.items()}[dtype]
    args = tuple(x.to(device) for x in spec.sample_inputs(precision))
    with _silenced(True), torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, input_names=spec.input_names,
            output_names=spec.output_names, dynamic_shapes=_dynamic_shapes(spec, module) if dynamic else None,
            optimize=False, verbose=False)
        graph = program.model.graph
        for weight in list(graph.initializers.values()):
            graph.initializers.pop(weight.name)
            weight.const_value = None
            graph.inputs.append(weight)
        onnxscript.optimizer.optimize(program.model)
        program.save(str(path), include_initializers=False)
    return onnx.load(str(path))


def save_onnx(model_proto, path: Path) -> list[Path]:
    """Save under a temporary name, check, rename into place; returns the files."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(model_proto, str(tmp))
        onnx.checker.check_model(str(tmp))
    return [path]


def _dynamic_shapes(spec: ExportSpec, module: torch.nn.Module):
    """spec.dynamic_shapes() in the structure of the wrapper's forward signature."""
    import inspect

    shapes = spec.dynamic_shapes()
    params = list(inspect.signature(module.forward).parameters.values())
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (tuple(shapes),)  # forward(*inputs): one varargs tuple
    return tuple(shapes)


def _check_interface(spec: ExportSpec, model_proto, precision: str) -> None:
    """The graph's inputs and outputs are the spec's: names in order, dtypes, static sizes, and a
    dynamic axis wherever the spec names one (named as the spec names it, for inputs). The runtime
    calls engines through the manifest's copy of the spec, so this is what makes that copy true."""
    import onnx

    for kind, got, want in (("input", model_proto.graph.input, spec.inputs),
                            ("output", model_proto.graph.output, spec.outputs)):
        names, expected = [v.name for v in got], [t.name for t in want]
        if names != expected:
            raise RuntimeError(f"{spec.name}: the graph's {kind}s {names} are not the spec's {expected}")
        for value, tensor in zip(got, want):
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            matches = len(dims) == len(tensor.shape) and all(
                (got_dim == dim) if isinstance(dim, int) or kind == "input" else isinstance(got_dim, str)
                for got_dim, dim in zip(dims, tensor.shape))
            if dtype != tensor.dtype_for(precision) or not matches:
                raise RuntimeError(f"{spec.name}: {kind} {value.name} is {dtype} {dims}, the spec says "
                                   f"{tensor.dtype_for(precision)} {list(tensor.shape)}")


@contextlib.contextmanager
def _silenced(quiet: bool):
    if not quiet:
        yield
        return
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    from polygraphy.logger import G_LOGGER

    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        G_LOGGER.module_severity = severity
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

"""OvComponents: the Components interface on OpenVINO's CPU plugin.

OpenVINO reads ONNX itself, so it runs the portable fp32 ONNX set that `emo-rt build-engines
--backend onnxruntime` writes (checked against the model through the same manifest) and compiles
each network for this CPU when loaded: there is no separate build. Precision is a compile hint on
the same files: fp32, or bf16 where the CPU multiplies bf16 natively (AVX-512 BF16 or AMX). The
plugin's own default on such CPUs is bf16, so fp32 is asked for explicitly.

Compiled networks are cached in the engine directory (`openvino-cache/`), so only the first load
pays for compiling (about 1.5 s for the step network). On the project's 2-core CPU one pass of the
shipped model's step network took 65-87 ms in onnxruntime on one thread, 32-34 ms here on two, 26-27
ms compiled for its shapes and 23-25 ms in bf16 (fastest calls; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from emo_rt.config import EmoConfig
from emo_rt.errors import EmoError
from emo_rt.runtime.backends.base import EngineComponents
from emo_rt.runtime.backends.manifest import ENGINE_NAMES, EngineRecord, read_engines

BACKEND = "openvino"
ENGINE_SET = "onnxruntime"  # the manifest entries whose ONNX files OpenVINO compiles
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}  # --dtype -> INFERENCE_PRECISION_HINT
# Compiled once per size of its one dynamic dimension (the step: batch 1, one pass, and 2, guidance
# as a batch), since a step compiled for its shapes ran about 20% faster than the dynamic one here; the
# others are compiled once, for their dynamic shapes.
PER_SIZE = ("step",)
CACHE_NAME = "openvino-cache"  # in the engine directory: OpenVINO's compiled networks, by its own keys


def native_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def shapes_to_compile(record: EngineRecord) -> list[dict[str, list[int]] | None]:
    """The input shapes to compile `record` for: each size of its one dynamic dimension (PER_SIZE),
    else None (its dynamic shapes)."""
    if record.name not in PER_SIZE:
        return [None]
    ((dim, built),) = record.dims.items()
    return [{t.name: [size if d == dim else d for d in t.shape] for t in record.inputs}
            for size in range(built["min"], built["max"] + 1)]


class _Runner:
    """One compiled network's infer request, behind a lock: a render calls the decoder from one
    thread and the step network from another (emo_rt.runtime.overlap)."""

    def __init__(self, compiled):
        self.request = compiled.create_infer_request()
        self.lock = threading.Lock()


class OvComponents(EngineComponents):
    def __init__(self, config: EmoConfig, records: dict[str, EngineRecord], precision: str = "fp32",
                 threads: int | None = None, cache_dir: Path | None = None):
        import openvino as ov

        core = ov.Core()
        if precision == "auto":  # the faster of the two where it is native (benchmarks/RESULTS.md)
            precision = "bf16" if native_bf16(core) else "fp32"
        if precision not in PRECISION_HINTS:
            raise EmoError(f"--backend openvino runs float32 or bfloat16, not {precision}")
        if cache_dir is not None:  # compiled networks kept: a later load imports them (keyed by OpenVINO)
            core.set_property({"CACHE_DIR": str(cache_dir)})
        if precision == "bf16" and not native_bf16(core):
            raise EmoError("--dtype bfloat16 with --backend openvino needs a CPU with native bf16 "
                           "(AVX-512 BF16 or AMX); this one has none: use float32")
        properties = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            properties["INFERENCE_NUM_THREADS"] = threads
        # (name, None): the network for its dynamic shapes; (name, input shapes): one for those shapes
        self._runners: dict[tuple[str, tuple | None], _Runner] = {}
        for name, record in records.items():
            for shapes in shapes_to_compile(record):
                model = core.read_model(str(record.path))
                if shapes is not None:
                    model.reshape(shapes)
                key = shapes and tuple(tuple(shapes[t.name]) for t in record.inputs)
                self._runners[name, key] = _Runner(core.compile_model(model, "CPU", properties))
        first = next(iter(self._runners.values()))
        self.threads = first.request.get_compiled_model().get_property("INFERENCE_NUM_THREADS")
        super().__init__(config, records, torch.device("cpu"))
        self.name = f"{BACKEND}[CPU,{precision},{self.threads} thread{'s' * (self.threads > 1)}]"

    @classmethod
    def load(cls, model_dir: str | Path, engine_dir: str | Path, precision: str = "auto",
             threads: int | None = None) -> "OvComponents":
        """Compiled networks for every fp32 ONNX engine in `engine_dir`, after checking them
        against `model_dir`. `precision`: fp32, bf16 or auto (bf16 where native); `threads`: per
        inference (default: all cores). Compiled networks are cached in `engine_dir`/openvino-cache
        where it is writable."""
        config = EmoConfig.load(model_dir)
        # ONNX files are portable: neither onnxruntime's version nor the device is checked
        records = read_engines(engine_dir, model_dir, ENGINE_SET, "fp32", backend_version="", device="any",
                               names=ENGINE_NAMES)
        cache = Path(engine_dir) / CACHE_NAME
        writable = os.access(cache if cache.is_dir() else engine_dir, os.W_OK)
        return cls(config, records, precision, threads, cache if writable else None)

    def _execute(self, record, inputs, output_shapes):
        shapes = tuple(tuple(inputs[t.name].shape) for t in record.inputs)  # within the built range (run)
        runner = self._runners.get((record.name, shapes)) or self._runners[record.name, None]
        with runner.lock:
            # inputs are read in place; outputs are copied out of the request's buffers, which the
            # next call overwrites
            results = runner.request.infer({name: x.numpy() for name, x in inputs.items()}, share_inputs=True)
            outputs = [torch.from_numpy(np.asarray(results[info.name])) for info in record.outputs]
        for info, out in zip(record.outputs, outputs):
            if tuple(out.shape) != tuple(output_shapes[info.name]):
                raise RuntimeError(f"openvino {record.name}: {info.name} came out {tuple(out.shape)}, "
                                   f"the manifest says {tuple(output_shapes[info.name])}")
        return outputs

    def compiled_shapes(self, name: str) -> list[tuple | None]:
        """The input shapes `name` is compiled for (None: the dynamic network), for reports and tests."""
        return [key for engine, key in self._runners if engine == name]

"""Engine builder: export specs, ONNX export, TensorRT builds and the manifest that ties them to
the runtime (emo_rt/runtime/backends reads the manifest and owns its format and digests, which
the builder imports; the runtime imports nothing from here).

Entry point: `build_engines(model_dir, backend, precision, out_dir, progress) -> BuildReport`.
"""

from emo_rt.export.build import BuildReport, EngineReport, build_engines

__all__ = ["BuildReport", "EngineReport", "build_engines"]

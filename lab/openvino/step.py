"""Probe: the step network, VAE decoder and motion network in OpenVINO, dynamic vs fixed shapes, fp32 vs
bf16, 2 threads: compile time, first call, fastest / median of 20 interleaved calls.

    python lab/openvino/step.py ENGINES   # an onnxruntime fp32 set from `emo-rt build-engines`
"""
import sys
ENGINES = sys.argv[1]
import glob, time, numpy as np, openvino as ov
core = ov.Core()
rng = np.random.default_rng(0)
for name, shapes in [("step", {"batch": 1}), ("vae_decoder", {"images": 8}), ("motion", {})]:
    p = glob.glob(f"{ENGINES}/{name}.fp32.*.onnx")[0]
    m = core.read_model(p)
    feed = {i.get_any_name(): rng.standard_normal([8 if d.is_dynamic else d.get_length() for d in i.get_partial_shape()] if name=="vae_decoder" else [1 if d.is_dynamic else d.get_length() for d in i.get_partial_shape()]).astype(np.float32) for i in m.inputs}
    if "timestep" in feed: feed["timestep"] = np.array([500.], np.float32)
    out = {}
    for kind in ["dyn", "static"]:
        for prec in ["f32", "bf16"]:
            m = core.read_model(p)
            if kind == "static": m.reshape({k: list(v.shape) for k, v in feed.items()})
            t = time.perf_counter()
            cm = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": prec, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
            ct = time.perf_counter() - t
            q = cm.create_infer_request(); t = time.perf_counter(); q.infer(feed); first = time.perf_counter() - t
            out[kind, prec] = (q, ct, first)
    ts = {k: [] for k in out}
    for r in range(20):
        for k, (q, _, _) in out.items():
            t = time.perf_counter(); q.infer(feed); ts[k].append(time.perf_counter() - t)
    for k, (q, ct, first) in out.items():
        print(f"{name:12s} {k[0]:6s} {k[1]:4s} compile {ct:.2f}s first {1e3*first:.0f}ms  min {1e3*min(ts[k]):.1f} med {1e3*np.median(ts[k]):.1f}")

"""Probe: where a bf16 step pass spends its time in OpenVINO (PERF_COUNT), by node type and by the
largest nodes' shapes; then the CPU plugin's scheduling knobs (pinning, TBB partitioner, denormals, one
thread) against the default, 30 interleaved calls each.

    python lab/openvino/profile_step.py ENGINES   # an onnxruntime fp32 set from `emo-rt build-engines`
"""
import collections
import glob
import sys
import time

import numpy as np
import openvino as ov

core = ov.Core()
path = glob.glob(f"{sys.argv[1]}/step.fp32.*.onnx")[0]
rng = np.random.default_rng(0)
model = core.read_model(path)
feed = {i.get_any_name(): rng.standard_normal([1 if d.is_dynamic else d.get_length() for d in i.get_partial_shape()])
        .astype(np.float32) for i in model.inputs}
feed["timestep"] = np.array([500.0], np.float32)
BASE = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}


def compiled(extra):
    m = core.read_model(path)
    m.reshape({k: list(v.shape) for k, v in feed.items()})
    return core.compile_model(m, "CPU", {**BASE, **extra})


cm = compiled({"PERF_COUNT": True})
request = cm.create_infer_request()
for _ in range(5):
    request.infer(feed)
shapes = {op.get_friendly_name(): (str(op.get_input_partial_shape(0)) if op.get_input_size() else "",
                                   str(op.get_output_partial_shape(0)))
          for op in cm.get_runtime_model().get_ordered_ops()}  # node -> (first input shape, output shape)
calls = 20
by_type, by_shape = collections.defaultdict(float), collections.defaultdict(float)  # ms a pass
count_type, count_shape = collections.Counter(), collections.Counter()  # nodes a pass
for _ in range(calls):
    request.infer(feed)
    for node in request.get_profiling_info():
        ms = node.real_time.total_seconds() * 1e3 / calls
        kind, shape = (node.node_type, node.exec_type), (node.node_type,) + shapes.get(node.node_name, ("?", "?"))
        by_type[kind] += ms
        by_shape[shape] += ms
        count_type[kind] += 1 / calls
        count_shape[shape] += 1 / calls
timed = sum(c for key, c in count_type.items() if by_type[key] > 0)  # reshapes and inputs take no time
print(f"{len(shapes)} runtime nodes, {round(timed)} of them with a time; {sum(by_type.values()):.1f} ms a pass "
      "summed over nodes")
for key, ms in sorted(by_type.items(), key=lambda kv: -kv[1])[:8]:
    print(f"  {ms:6.2f} ms  {round(count_type[key]):4d} nodes  {key}")
for key, ms in sorted(by_shape.items(), key=lambda kv: -kv[1])[:6]:
    print(f"  {ms:6.2f} ms  {round(count_shape[key]):4d} nodes  {key}")

variants = {"default": {}, "pinning on": {"ENABLE_CPU_PINNING": True}, "pinning off": {"ENABLE_CPU_PINNING": False},
            "TBB static": {"TBB_PARTITIONER": "STATIC"}, "denormals": {"CPU_DENORMALS_OPTIMIZATION": True},
            "1 thread": {"INFERENCE_NUM_THREADS": 1}}
requests = {name: compiled(extra).create_infer_request() for name, extra in variants.items()}
times = {name: [] for name in variants}
for q in requests.values():
    q.infer(feed)
for _ in range(30):
    for name, q in requests.items():
        t = time.perf_counter()
        q.infer(feed)
        times[name].append(time.perf_counter() - t)
for name, ts in times.items():
    print(f"{name:12s} fastest {1e3 * min(ts):.1f} ms, median {1e3 * np.median(ts):.1f} ms")

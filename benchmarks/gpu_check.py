"""The first GPU session's check, in one call of at most 7 minutes on one H100/H200 with only PyTorch
and Triton installed (no TensorRT, onnxruntime-gpu or DALI, no network):

    python benchmarks/gpu_check.py --out "$OUT"             # on the GPU (budget 420 s)
    python benchmarks/gpu_check.py --out /tmp/gc --dry-run  # the same code paths on CPU, < 1 min

Parts, in order, each a subprocess with its own timeout (cut to what is left of the budget, so the
whole run fits by construction; a part that hangs or crashes costs only its own time):

    env      versions, device and its limits, which packages import
    tests    pytest on CUDA: kernels, overlap, CUDA graphs, TensorRT graph logic, onnxruntime streams
             (dry run: each file exists and has tests; the CPU suite runs them anyway)
    kernels  each Triton kernel at head_dim 40/80/160 in fp32/fp16/bf16 at sd15's sizes: shared
             memory, registers, spills (and the launcher's tile and estimates), time vs torch,
             error vs an fp64 truth against torch's own error (dry run: interpreter, small sizes)
    render   the shipped tiny model on CUDA in fp16: Triton vs SDPA attention (with fp32 SDPA as the
             control of how much precision alone moves the frames), overlap on and off (frames must
             match), CUDA graphs on and off, frames/s of each (dry run: CPU, SDPA, overlap only)
    sd15     the sd15 preset (random init, fp16, 512x512): frames/s at 1, 2 and 4 denoising steps,
             and at 4 with CUDA graphs; seconds per step (dry run: the preset's geometry and tiles)

Writes OUT/gpu_check.json (every part: status, seconds, timeout, results), OUT/gpu_check.md (the
tables), OUT/parts/<part>.json (written as each item finishes, so a timed-out part keeps what it
measured) and OUT/logs/<part>.log. Exit status 0 when every part passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("env", "tests", "kernels", "render", "sd15")
BUDGET_S = 420.0  # the 7 minutes
DRY_RUN_BUDGET_S = 58.0
# Seconds per part on the GPU (sum 410 s; each is also cut to what is left of the budget).
TIMEOUTS = {"env": 20, "tests": 130, "kernels": 80, "render": 90, "sd15": 90}
DRY_RUN_TIMEOUTS = {"env": 12, "tests": 8, "kernels": 12, "render": 35, "sd15": 10}
RESERVE_S = 3.0  # kept back for the driver's own writing
MIN_PART_S = 5.0  # a part given less than this is skipped, not started
TEST_FILES = ("tests/kernels", "tests/runtime/test_runtime_overlap.py", "tests/runtime/test_cuda_graph.py",
              "tests/runtime/test_tensorrt_graphs.py", "tests/runtime/test_onnxruntime_streams.py")
HEAD_DIMS = (40, 80, 160)
DTYPE_NAMES = ("float32", "float16", "bfloat16")


# ---- imports without an install ---------------------------------------------------------------

# pyproject maps emo_rt.export / .kernels / .training to export/, kernels/, training/ at the top of
# the repository. Where emo-rt is not pip-installed (the lent GPU machine), this finder, appended
# after the others (an installed emo-rt wins), makes the same names import from the checkout; the
# parts load it in-process, pytest as an early plugin (-p emo_rt_layout).
LAYOUT_SHIM = '''"""emo-rt's package layout for a checkout that is not pip-installed (written by gpu_check)."""
import importlib.abc
import importlib.util
import sys
from pathlib import Path

_ROOT = Path(%r)
_DIRS = {"emo_rt.export": "export", "emo_rt.kernels": "kernels", "emo_rt.training": "training"}


class EmoRtLayout(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        folder = _DIRS.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, _ROOT / folder / "__init__.py",
                                                      submodule_search_locations=[str(_ROOT / folder)])


if str(_ROOT) not in sys.path:
    sys.path.append(str(_ROOT))
if not any(type(f).__name__ == "EmoRtLayout" for f in sys.meta_path):
    sys.meta_path.append(EmoRtLayout())
'''


def install_layout(out: Path) -> Path:
    """Write OUT/shim/emo_rt_layout.py and load it here; returns the directory (for PYTHONPATH)."""
    shim_dir = out / "shim"
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "emo_rt_layout.py").write_text(LAYOUT_SHIM % str(ROOT))
    if str(shim_dir) not in sys.path:
        sys.path.insert(0, str(shim_dir))
    import emo_rt_layout  # noqa: F401  (installs the finder)

    return shim_dir


# ---- files ------------------------------------------------------------------------------------

def write_json(path: Path, data: object) -> None:
    """Atomically (temporary file + rename): a part killed mid-write leaves the previous version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class Recorder:
    """A part's results, rewritten to OUT/parts/<part>.json after every item."""

    def __init__(self, out: Path, part: str):
        self.path = out / "parts" / f"{part}.json"
        self.data: dict = {}

    def __setitem__(self, key: str, value: object) -> None:
        self.data[key] = value
        write_json(self.path, self.data)

    def append(self, key: str, item: object) -> None:
        self[key] = [*self.data.get(key, []), item]


# ---- the driver -------------------------------------------------------------------------------

def part_timeouts(dry_run: bool) -> dict[str, float]:
    return dict(DRY_RUN_TIMEOUTS if dry_run else TIMEOUTS)


def plan_timeout(part: str, timeouts: dict[str, float], deadline: float, now: float) -> float:
    """The part's own timeout, cut to what is left before the deadline (minus the reserve)."""
    return max(0.0, min(timeouts[part], deadline - now - RESERVE_S))


def run_part(part: str, out: Path, dry_run: bool, timeout: float) -> dict:
    """One part in a subprocess of its own session (so a timeout kills its children too)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--out", str(out),
               "--timeout", f"{timeout:.1f}"]
    if dry_run:
        command.append("--dry-run")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if dry_run:
        env.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated
    log = out / "logs" / f"{part}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
            status = "ok" if returncode == 0 else f"failed (exit {returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = "timeout"
    seconds = time.perf_counter() - started
    result_path = out / "parts" / f"{part}.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if status == "ok" and result.get("passed") is False:
        status = "check failed"
    tail = log.read_text(errors="replace").splitlines()[-8:] if status != "ok" else []
    return {"status": status, "seconds": round(seconds, 1), "timeout_s": round(timeout, 1),
            "result": result, "log_tail": tail}


def main_driver(out: Path, dry_run: bool, parts: list[str], budget: float) -> int:
    started = time.perf_counter()
    deadline = started + budget
    timeouts = part_timeouts(dry_run)
    report = {"dry_run": dry_run, "budget_s": budget, "timeouts_s": timeouts, "parts": {},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name in list((out / "parts").glob("*.json")) if (out / "parts").is_dir() else []:
        name.unlink()  # results of an earlier run must not pass for this one's
    for part in parts:
        timeout = plan_timeout(part, timeouts, deadline, time.perf_counter())
        if timeout < MIN_PART_S:
            report["parts"][part] = {"status": "skipped (budget spent)", "seconds": 0.0, "timeout_s": timeout}
        else:
            print(f"gpu_check: {part} (timeout {timeout:.0f} s)", flush=True)
            report["parts"][part] = run_part(part, out, dry_run, timeout)
            print(f"gpu_check: {part}: {report['parts'][part]['status']} in "
                  f"{report['parts'][part]['seconds']} s", flush=True)
        report["wall_s"] = round(time.perf_counter() - started, 1)
        write_json(out / "gpu_check.json", report)
    report["passed"] = all(p["status"] == "ok" for p in report["parts"].values())
    write_json(out / "gpu_check.json", report)
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["passed"] else 1


# ---- the table --------------------------------------------------------------------------------

def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def markdown(report: dict) -> str:
    parts = report["parts"]
    env = parts.get("env", {}).get("result", {})
    title = "gpu_check (dry run on CPU)" if report["dry_run"] else "gpu_check"
    lines = [f"# {title}: {env.get('device', {}).get('name', 'no CUDA device')}", "",
             f"torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}, triton {env.get('triton', '?')}; "
             f"wall {report.get('wall_s', '?')} s of a {report['budget_s']:.0f} s budget", ""]
    lines += _table(["part", "status", "seconds", "timeout (s)"],
                    [[name, p["status"], p["seconds"], p["timeout_s"]] for name, p in parts.items()])
    tests = parts.get("tests", {}).get("result", {})
    if tests:
        summary = tests.get("summary") or f"{sum(tests.get('test_functions', {}).values())} test functions found"
        lines += [f"tests: {summary}", *(f"- failed: {t}" for t in tests.get("failed", [])), ""]
    kernels = parts.get("kernels", {}).get("result", {}).get("kernels", [])
    if kernels:
        lines += _table(["kernel", "head_dim", "dtype", "tile (m x n x d, warps, stages)", "shared (KB)",
                         "est. shared (KB)", "registers", "spills", "kernel (ms)", "torch (ms)",
                         "error / torch's", "ok"],
                        [[k["kernel"], k["head_dim"], k["dtype"],
                          f"{k.get('block_m')}x{k.get('block_n')}x{k.get('block_d')}, {k.get('num_warps', '-')}, "
                          f"{k.get('num_stages', '-')}", _kb(k.get("shared_bytes")),
                          _kb(k.get("estimated_shared_bytes")), k.get("registers", "-"), k.get("spills", "-"),
                          _num(k.get("kernel_ms")), _num(k.get("torch_ms")), _num(k.get("error_ratio")),
                          k.get("ok")] for k in kernels])
    for part in ("render", "sd15"):
        runs = parts.get(part, {}).get("result", {}).get("runs", [])
        if runs:
            lines += [f"{part}:", ""]
            lines += _table(["run", "attention", "dtype", "overlap", "CUDA graphs", "steps", "frames", "wall (s)",
                             "frames/s"],
                            [[r["name"], r["attention"], r["dtype"], r["overlap"], r["cuda_graphs"], r["steps"],
                              r["frames"], _num(r["wall_s"]), _num(r["fps"])] for r in runs])
        checks = parts.get(part, {}).get("result", {}).get("checks", {})
        lines += [f"- {name}: {value}" for name, value in checks.items()] + ([""] if checks else [])
    return "\n".join(lines) + "\n"


def _kb(value) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


# ---- part: env --------------------------------------------------------------------------------

def part_env(out: Path, dry_run: bool, timeout: float) -> None:
    import importlib
    import importlib.util

    import torch

    rec = Recorder(out, "env")
    rec["python"] = platform.python_version()
    rec["torch"] = torch.__version__
    rec["cuda"] = torch.version.cuda
    rec["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    rec["triton"] = _version("triton")
    rec["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET")
    rec["commit"] = _git_commit()
    packages = {}
    for module, distribution in IMPORTS.items():
        # the dry run reads versions from metadata (importing the model stack takes ~10 s here);
        # on the GPU each module is imported: a package that is there but fails to import shows
        packages[module] = (_installed(distribution) if dry_run else
                            _version(module) if importlib.util.find_spec(module) else None)
    rec["packages"] = packages
    if packages["onnxruntime"] and not dry_run:
        rec["onnxruntime_providers"] = importlib.import_module("onnxruntime").get_available_providers()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec["device"] = {
            "name": props.name, "capability": f"sm_{props.major}{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count,
            "shared_per_block_optin": getattr(props, "shared_memory_per_block_optin", None),
            "shared_per_sm": getattr(props, "shared_memory_per_multiprocessor", None),
            "registers_per_sm": getattr(props, "regs_per_multiprocessor", None),
            "count": torch.cuda.device_count()}
        rec["driver"] = _nvidia_smi()
    rec["passed"] = dry_run or torch.cuda.is_available()


IMPORTS = {"numpy": "numpy", "PIL": "pillow", "diffusers": "diffusers", "transformers": "transformers",
           "safetensors": "safetensors", "av": "av", "soundfile": "soundfile", "cv2": "opencv-python-headless",
           "mediapipe": "mediapipe", "onnx": "onnx", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt",
           "pytest": "pytest", "pytest_timeout": "pytest-timeout"}


def _installed(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _version(module: str) -> str | None:
    import importlib

    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as error:  # noqa: BLE001 -- reported: an import that fails is what env is for
        return f"import failed: {type(error).__name__}: {str(error)[:120]}"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_smi() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# ---- part: tests ------------------------------------------------------------------------------

def part_tests(out: Path, dry_run: bool, timeout: float) -> None:
    """pytest in a subprocess that stops before this part's timeout (10 s, or 15% of a short one),
    so its report survives."""
    import xml.etree.ElementTree as ET

    rec = Recorder(out, "tests")
    junit = out / "tests.xml"
    shim_dir = out / "shim"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "emo_rt_layout",
               "-o", "addopts=", "-rfEs", f"--junitxml={junit}", *TEST_FILES]
    rec["command"] = " ".join(command[1:])
    if dry_run:  # these files run in the CPU suite anyway: check only that each exists and has tests
        rec["test_functions"] = test_functions(TEST_FILES)
        rec["passed"] = all(rec.data["test_functions"].values())
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(shim_dir), str(ROOT),
                                                                    os.environ.get("PYTHONPATH")])))
    log = out / "logs" / "pytest.log"
    with log.open("w") as sink:
        try:
            rec["exit_code"] = subprocess.run(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                              timeout=timeout - min(10.0, 0.15 * timeout)).returncode
        except subprocess.TimeoutExpired:
            rec["exit_code"] = "timeout"
    lines = log.read_text(errors="replace").strip().splitlines()
    rec["summary"] = lines[-1] if lines else ""
    if rec.data["exit_code"] == "timeout":
        rec["last_lines"] = lines[-20:]
    failed, skipped = [], {}
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            for kind in ("failure", "error"):
                node = case.find(kind)
                if node is not None:
                    message = (node.get("message") or kind).strip().splitlines()
                    failed.append(f"{name}: {message[0][:200] if message else kind}")
            node = case.find("skipped")
            if node is not None:
                reason = (node.get("message") or "")[:160]
                skipped[reason] = skipped.get(reason, 0) + 1
    rec["failed"] = failed
    rec["skipped"] = skipped
    rec["passed"] = rec.data["exit_code"] == 0


def test_functions(paths) -> dict[str, int]:
    """Top-level `test_*` functions per test file under `paths` (files or folders), read with ast."""
    import ast

    files = []
    for path in paths:
        path = ROOT / path
        files += sorted(path.glob("test_*.py")) if path.is_dir() else [path]
    return {str(f.relative_to(ROOT)): (sum(1 for node in ast.parse(f.read_text()).body
                                          if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))
                                      if f.is_file() else 0) for f in files}


# ---- part: kernels ----------------------------------------------------------------------------

# sd15's levels at 512 px where each head size appears (8 heads): channels, tokens of the level
SD15_LEVELS = {40: (320, 4096), 80: (640, 1024), 160: (1280, 256)}


def part_kernels(out: Path, dry_run: bool, timeout: float) -> None:
    import torch

    from emo_rt.kernels.reference_attention import (
        reference_attention,
        reference_attention_reference,
        reference_attention_resources,
        reference_tiles,
    )
    from emo_rt.kernels.temporal_attention import (
        temporal_attention,
        temporal_attention_reference,
        temporal_attention_resources,
        temporal_tiles,
    )
    from emo_rt.kernels.testing import max_error, reference_inputs, temporal_inputs

    rec = Recorder(out, "kernels")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        rec["max_shared_per_block"] = getattr(props, "shared_memory_per_block_optin", props.shared_memory_per_block)
    dtypes = DTYPE_NAMES if cuda else ("float32",)  # the interpreter: one dtype, small sizes
    for head_dim in HEAD_DIMS:
        channels, tokens = SD15_LEVELS[head_dim]
        heads = channels // head_dim
        if not cuda:
            heads, tokens = 1, 21
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            frames = 2  # two frame rows share one reference: the fp64 truth stays a few GB at 4096 tokens
            ref_args = reference_inputs(1, frames, tokens, tokens, heads * head_dim, dtype, device)
            tmp_args = temporal_inputs(tokens if cuda else 3, 12, 4, heads * head_dim, dtype, device)
            cases = [("reference", ref_args, (frames, heads), reference_attention, reference_attention_reference,
                      reference_attention_resources,
                      reference_tiles(tokens, tokens, head_dim, dtype)),
                     ("temporal", tmp_args, (heads,), temporal_attention, temporal_attention_reference,
                      temporal_attention_resources, temporal_tiles(12, head_dim))]
            for kernel, args, extra, launch, torch_ref, resources, tiles in cases:
                item = {"kernel": kernel, "head_dim": head_dim, "dtype": dtype_name, "heads": heads,
                        "tokens": tokens, "block_m": tiles.block_m, "block_n": tiles.block_n,
                        "block_d": tiles.block_d, "num_warps": tiles.num_warps, "num_stages": tiles.num_stages,
                        "estimated_shared_bytes": tiles.shared_bytes, "estimated_registers": tiles.registers}
                try:
                    if cuda:
                        item.update(resources(*args, *extra))
                    result = launch(*args, *extra)
                    control = torch_ref(*args, *extra)
                    truth = torch_ref(*[None if a is None else a.double() for a in args], *extra)
                    item["error"], item["control_error"] = max_error(result, truth), max_error(control, truth)
                    item["error_ratio"] = item["error"] / max(item["control_error"], 1e-30)
                    floor = 8 * torch.finfo(torch.float32).eps * truth.abs().max().item() if dtype_name == "float32" else 0
                    accurate = item["error"] <= 2 * item["control_error"] + floor
                    if cuda:
                        item["kernel_ms"] = _cuda_ms(lambda f=launch, a=(*args, *extra): f(*a))
                        item["torch_ms"] = _cuda_ms(lambda f=torch_ref, a=(*args, *extra): f(*a))
                        fits = item["shared_bytes"] <= rec.data["max_shared_per_block"] and item["spills"] == 0
                    else:
                        fits = tiles.fits()
                    item["ok"] = bool(accurate and fits)
                except Exception as error:  # noqa: BLE001 -- recorded per kernel; the others still run
                    item["ok"], item["error_message"] = False, f"{type(error).__name__}: {str(error)[:300]}"
                rec.append("kernels", item)
    rec["passed"] = all(k["ok"] for k in rec.data.get("kernels", []))


def _cuda_ms(fn, repeats: int = 10) -> float:
    """Median milliseconds of fn() on the current stream (after one warm-up call)."""
    import torch

    fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


# ---- render inputs, runs and comparisons ------------------------------------------------------

def portrait(resolution: int):
    """examples/ref.png resized whole, the face box given (no face detector needed)."""
    from emo_rt.io.image import FaceBox, load_image, prepare_reference

    image = load_image(ROOT / "examples" / "ref.png")
    height, width = image.shape[:2]
    box = FaceBox(width // 4, height // 5, width // 2, height * 3 // 5)
    return prepare_reference(image, resolution, face_box=box, no_crop=True)


def speech_like(frames: int, fps: int, rate: int = 16000):
    """A deterministic stand-in for speech: a 140 Hz voice with harmonics under a 4 Hz syllable
    envelope (no audio file or decoder needed)."""
    import numpy as np

    t = np.arange(int(np.ceil(frames * rate / fps))) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.3 * voice * envelope).astype(np.float32)


def render_run(model, schedule, reference, waveform, *, name: str, attention: str, dtype, overlap: bool,
               graphs: bool, steps: int, cfg: float, warmup_waveform=None) -> tuple[dict, object]:
    """One render (after an untimed warm-up on `warmup_waveform`): its figures and its frames."""
    import numpy as np

    from emo_rt.pipeline import EmoPipeline, RenderSettings
    from emo_rt.runtime.components import TorchComponents
    from emo_rt.runtime.cuda_graph import GraphedComponents

    components = TorchComponents(model, dtype, attention=attention)
    if graphs:
        components = GraphedComponents(components)
    pipeline = EmoPipeline(components, schedule)
    settings = RenderSettings(steps=steps, cfg=cfg, seed=0, overlap=overlap)
    if warmup_waveform is not None:
        for _ in pipeline(reference, warmup_waveform, settings):
            pass
    _sync()
    started = time.perf_counter()
    frames = np.concatenate(list(pipeline(reference, waveform, settings)))
    _sync()
    wall = time.perf_counter() - started
    return ({"name": name, "attention": attention, "dtype": str(dtype).removeprefix("torch."),
             "overlap": overlap, "cuda_graphs": graphs, "steps": steps, "frames": len(frames),
             "wall_s": wall, "fps": len(frames) / wall}, frames)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def frame_difference(a, b) -> dict:
    """max and mean absolute difference in 8-bit levels, and whether the frames are identical."""
    import numpy as np

    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"identical": bool((diff == 0).all()), "max_levels": int(diff.max()), "mean_levels": float(diff.mean())}


def part_render(out: Path, dry_run: bool, timeout: float) -> None:
    import torch

    from emo_rt.models import EmoModel
    from emo_rt.pipeline import default_model_dir
    from emo_rt.schedulers import noise_schedule

    rec = Recorder(out, "render")
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # a shared 2-core CPU: one intra-op thread per stage
    model_dir = default_model_dir()
    rec["model"] = str(model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir)
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    model = EmoModel.from_pretrained(model_dir, dtype=dtype, device=device)
    config = model.config
    schedule = noise_schedule(model_dir)
    reference = portrait(config.resolution)
    frames = 2 * config.fps if cuda else config.num_frames  # 2 s (7 windows), or one window
    waveform = speech_like(frames, config.fps, config.audio.sample_rate)
    warmup = speech_like(config.num_frames, config.fps, config.audio.sample_rate) if cuda else None
    steps, cfg = (4, 3.5) if cuda else (1, 3.5)
    rec["audio_frames"], rec["steps"], rec["cfg"] = frames, steps, cfg
    runs = ([("sdpa", "sdpa", dtype, False, False), ("sdpa-overlap", "sdpa", dtype, True, False)] if not cuda else
            [("sdpa", "sdpa", dtype, False, False), ("sdpa-fp32", "sdpa", torch.float32, False, False),
             ("triton", "triton", dtype, False, False), ("triton-overlap", "triton", dtype, True, False),
             ("triton-graphs", "triton", dtype, False, True), ("triton-graphs-overlap", "triton", dtype, True, True)])
    results = {}
    for name, attention, run_dtype, overlap, graphs in runs:
        run_model = model if run_dtype == dtype else EmoModel.from_pretrained(model_dir, dtype=run_dtype, device=device)
        try:
            figures, results[name] = render_run(run_model, schedule, reference, waveform, name=name,
                                                attention=attention, dtype=run_dtype, overlap=overlap, graphs=graphs,
                                                steps=steps, cfg=cfg, warmup_waveform=warmup)
            rec.append("runs", figures)
        except Exception as error:  # noqa: BLE001 -- recorded; the next configuration still runs
            rec.append("errors", f"{name}: {type(error).__name__}: {str(error)[:300]}")
    checks = {}
    pairs = [("overlap (sdpa)", "sdpa", "sdpa-overlap"), ("overlap (triton)", "triton", "triton-overlap"),
             ("overlap (triton, graphs)", "triton-graphs", "triton-graphs-overlap"),
             ("graphs on vs off (triton)", "triton", "triton-graphs"), ("triton vs sdpa", "sdpa", "triton"),
             ("fp16 vs fp32 (sdpa, control)", "sdpa-fp32", "sdpa")]
    for label, a, b in pairs:
        if a in results and b in results:
            checks[label] = frame_difference(results[a], results[b])
    rec["checks"] = checks
    verdicts = [checks[k]["identical"] for k in checks if k.startswith("overlap")]  # the frames must match
    if "graphs on vs off (triton)" in checks:  # the same kernels: at most a rounding flip
        verdicts.append(checks["graphs on vs off (triton)"]["max_levels"] <= 1)
    if "triton vs sdpa" in checks and "fp16 vs fp32 (sdpa, control)" in checks:
        control = checks["fp16 vs fp32 (sdpa, control)"]["mean_levels"]  # what fp16 alone moves
        verdicts.append(checks["triton vs sdpa"]["mean_levels"] <= max(2 * control, 0.5))
    rec["passed"] = bool(verdicts) and all(verdicts) and not rec.data.get("errors")


# ---- part: sd15 -------------------------------------------------------------------------------

def part_sd15(out: Path, dry_run: bool, timeout: float) -> None:
    import torch

    from emo_rt.config import sd15

    rec = Recorder(out, "sd15")
    config = sd15()
    rec["resolution"], rec["latent_size"] = config.resolution, config.latent_size
    if not torch.cuda.is_available():  # building sd15 takes ~10 s even on the meta device: only the plan
        from emo_rt.kernels.reference_attention import reference_tiles

        rec["model"] = "dry run: the sd15 preset's geometry and the kernel tiles its levels get in fp16"
        rec["tiles"] = {head_dim: reference_tiles(tokens, tokens, head_dim, torch.float16, dot_fp32=False).__dict__
                        for head_dim, (_, tokens) in SD15_LEVELS.items()}
        rec["planned_runs"] = [name for name, _, _ in SD15_RUNS]
        rec["passed"] = True
        return
    from emo_rt.models import EmoModel
    from emo_rt.schedulers import noise_schedule

    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = EmoModel(config)  # random init, straight on the GPU
    model = model.to(torch.float16).eval()
    rec["model"] = "sd15 preset, random init, fp16"
    rec["build_s"] = round(time.perf_counter() - started, 1)
    schedule = noise_schedule(None)  # SD1.5's
    reference = portrait(config.resolution)
    frames = 2 * config.num_frames  # two windows
    waveform = speech_like(frames, config.fps, config.audio.sample_rate)
    warmup = speech_like(config.num_frames, config.fps, config.audio.sample_rate)
    rec["audio_frames"], rec["cfg"] = frames, 3.5
    for index, (name, steps, graphs) in enumerate(SD15_RUNS):
        try:  # the first run and the graphed one warm up (kernel compilation, capture) untimed
            figures, _ = render_run(model, schedule, reference, waveform, name=name, attention="triton",
                                    dtype=torch.float16, overlap=True, graphs=graphs, steps=steps, cfg=3.5,
                                    warmup_waveform=warmup if index == 0 or graphs else None)
            rec.append("runs", figures)
        except Exception as error:  # noqa: BLE001 -- recorded; the next configuration still runs
            rec.append("errors", f"{name}: {type(error).__name__}: {str(error)[:300]}")
        rec["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        fit = steps_fit(rec.data.get("runs", []))
        if fit is not None:
            rec["checks"] = fit
    rec["passed"] = bool(rec.data.get("runs")) and not rec.data.get("errors")


SD15_RUNS = [("steps-1", 1, False), ("steps-2", 2, False), ("steps-4", 4, False), ("steps-4-graphs", 4, True)]


def steps_fit(runs: list[dict]) -> dict | None:
    """wall = fixed + steps x per-step, least squares over the runs without CUDA graphs (None with
    fewer than two step counts): the cost of one denoising step over all windows, and the rest."""
    plain = [r for r in runs if not r["cuda_graphs"]]
    xs, ys = [r["steps"] for r in plain], [r["wall_s"] for r in plain]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {"seconds per denoising step (all windows)": round(slope, 4),
            "seconds besides the steps": round(my - slope * mx, 4)}


PART_FUNCTIONS = {"env": part_env, "tests": part_tests, "kernels": part_kernels, "render": part_render,
                  "sd15": part_sd15}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json/.md, parts/, logs/")
    parser.add_argument("--dry-run", action="store_true", help="the same parts on CPU, small (CI: < 1 min)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole run (default {BUDGET_S:.0f}, dry run {DRY_RUN_BUDGET_S:.0f})")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # how the driver runs each part
    parser.add_argument("--timeout", type=float, default=None, help=argparse.SUPPRESS)  # the part's own
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part:
        install_layout(args.out)
        PART_FUNCTIONS[args.part](args.out, args.dry_run, args.timeout or TIMEOUTS[args.part])
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    budget = args.budget if args.budget is not None else (DRY_RUN_BUDGET_S if args.dry_run else BUDGET_S)
    return main_driver(args.out, args.dry_run, parts, budget)


if __name__ == "__main__":
    sys.exit(main())

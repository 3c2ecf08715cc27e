"""benchmarks/gpu_check.py's CPU side: the dry run goes through every part and writes its JSON and
table; the GPU budget holds by construction (per-part timeouts cut to what is left); a part that
overruns is killed with its children and the run goes on; the figures' arithmetic."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_run_fits_its_budget_by_construction(gpu_check):
    assert gpu_check.BUDGET_S <= 7 * 60
    assert sum(gpu_check.TIMEOUTS.values()) + gpu_check.RESERVE_S <= gpu_check.BUDGET_S
    assert list(gpu_check.TIMEOUTS) == list(gpu_check.PARTS) == list(gpu_check.DRY_RUN_TIMEOUTS)
    # a late part gets only what is left, and nothing once the budget is spent
    start = 1000.0
    deadline = start + gpu_check.BUDGET_S
    assert gpu_check.plan_timeout("tests", gpu_check.TIMEOUTS, deadline, start) == gpu_check.TIMEOUTS["tests"]
    assert gpu_check.plan_timeout("sd15", gpu_check.TIMEOUTS, deadline, deadline - 40) == 40 - gpu_check.RESERVE_S
    assert gpu_check.plan_timeout("sd15", gpu_check.TIMEOUTS, deadline, deadline + 5) == 0.0


def test_a_part_past_its_timeout_is_killed_and_recorded(gpu_check, tmp_path):
    started = time.perf_counter()
    result = gpu_check.run_part("render", tmp_path, dry_run=True, timeout=1.0)  # importing torch alone takes longer
    assert result["status"] == "timeout" and result["seconds"] < 10
    assert time.perf_counter() - started < 10
    leftover = subprocess.run(["pgrep", "-f", f"gpu_check.py --part render --out {tmp_path}"],
                              capture_output=True, text=True).stdout.strip()
    assert leftover == ""  # its whole process group went


@pytest.mark.slow  # ~20 s on a quiet 2-core CPU, ~40 s beside other jobs: four Python start-ups with torch
def test_the_dry_run_goes_through_every_part(tmp_path):
    out = tmp_path / "out"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    report = json.loads((out / "gpu_check.json").read_text())
    statuses = {name: part["status"] for name, part in report["parts"].items()}
    assert done.returncode == 0 and report["passed"], (statuses, done.stdout[-2000:])
    assert list(statuses) == ["env", "tests", "kernels", "render", "sd15"]
    assert report["dry_run"] and report["wall_s"] <= report["budget_s"] < 60 and wall < 75
    parts = {name: part["result"] for name, part in report["parts"].items()}
    assert parts["env"]["torch"] and parts["env"]["packages"]["numpy"]
    files = parts["tests"]["test_functions"]  # every file named for the GPU run exists and has tests
    assert len(files) >= 9 and all(files.values()) and "tests/runtime/test_cuda_graph.py" in files
    kernels = parts["kernels"]["kernels"]
    assert {(k["kernel"], k["head_dim"]) for k in kernels} == {(kernel, d) for kernel in ("reference", "temporal")
                                                              for d in (40, 80, 160)}
    assert all(k["ok"] and k["error_ratio"] < 2 for k in kernels)  # the interpreter run is checked too
    runs = parts["render"]["runs"]
    assert [r["overlap"] for r in runs] == [False, True] and all(r["fps"] > 0 for r in runs)
    assert parts["render"]["checks"]["overlap (sdpa)"]["identical"]
    assert set(parts["sd15"]["tiles"]) == {"40", "80", "160"}
    table = (out / "gpu_check.md").read_text()
    assert "| render | ok |" in table and "| reference | 160 | float32 |" in table
    assert sorted(p.name for p in (out / "parts").iterdir()) == sorted(f"{p}.json" for p in statuses)


def test_the_table_shows_the_compiled_resources(gpu_check):
    report = {"dry_run": False, "budget_s": 420.0, "wall_s": 300.0, "parts": {
        "env": {"status": "ok", "seconds": 3.0, "timeout_s": 20.0,
                "result": {"torch": "2.13.0", "cuda": "12.8", "triton": "3.9.0", "device": {"name": "NVIDIA H200"}}},
        "kernels": {"status": "ok", "seconds": 40.0, "timeout_s": 80.0, "result": {"kernels": [
            {"kernel": "reference", "head_dim": 160, "dtype": "float32", "block_m": 16, "block_n": 16,
             "block_d": 256, "num_warps": 4, "num_stages": 2, "shared_bytes": 67584,
             "estimated_shared_bytes": 82944, "registers": 168, "spills": 0, "kernel_ms": 1.25,
             "torch_ms": 2.5, "error_ratio": 0.8, "ok": True}]}}}}
    table = gpu_check.markdown(report)
    assert "# gpu_check: NVIDIA H200" in table
    assert "| reference | 160 | float32 | 16x16x256, 4, 2 | 66.0 | 81.0 | 168 | 0 | 1.25 | 2.5 | 0.8 | True |" in table


def test_seconds_per_step_come_from_a_least_squares_fit(gpu_check):
    runs = [{"steps": s, "wall_s": 1.0 + 0.5 * s, "cuda_graphs": False} for s in (1, 2, 4)]
    runs.append({"steps": 4, "wall_s": 0.1, "cuda_graphs": True})  # graphed runs are not in the fit
    fit = gpu_check.steps_fit(runs)
    assert fit == {"seconds per denoising step (all windows)": 0.5, "seconds besides the steps": 1.0}
    assert gpu_check.steps_fit(runs[:1]) is None


def test_frame_differences_are_in_8_bit_levels(gpu_check):
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    assert gpu_check.frame_difference(a, b) == {"identical": True, "max_levels": 0, "mean_levels": 0.0}
    b[0, 0, 0, 0] = 255  # no uint8 wrap-around
    diff = gpu_check.frame_difference(a, b)
    assert not diff["identical"] and diff["max_levels"] == 255 and diff["mean_levels"] == pytest.approx(255 / a.size)

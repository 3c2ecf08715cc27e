"""`emo-rt bench`: FLOP counting (incl. CPU attention), PSNR, the JSON/PNG/table it writes, and its
errors. No timing is asserted: timings are the benchmark's output, not its correctness."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emo_rt.bench import bench_options, count_flops, format_table, run_bench, video_psnr
from emo_rt.cli import main


def test_count_flops_counts_matmuls_convolutions_and_cpu_attention():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 3 * 5 * 7
    x, w = torch.randn(1, 4, 10, 10), torch.randn(6, 4, 3, 3)
    assert count_flops(lambda: F.conv2d(x, w, padding=1)) == 2 * 6 * 4 * 9 * 10 * 10
    q, k, v = torch.randn(2, 3, 11, 8), torch.randn(2, 3, 13, 8), torch.randn(2, 3, 13, 16)
    # attention = Q K^T then P V: the two matmuls written out are the control
    explicit = count_flops(lambda: torch.softmax(q @ k.transpose(-1, -2), -1) @ v)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == explicit == 2 * 6 * 11 * 13 * (8 + 16)


def test_video_psnr_is_one_mse_over_every_pixel():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    assert video_psnr(a, a) == 200.0  # identical: the cap (the bench reports identical frames as such)
    assert video_psnr(a, a + 1) == pytest.approx(20 * np.log10(255), abs=1e-9)
    b = a.copy()
    b[1] = 2  # frame 0 exact, frame 1 off by 2: MSE 2 over the video, not the mean of per-frame PSNRs
    assert video_psnr(b, a) == pytest.approx(10 * np.log10(255 ** 2 / 2), abs=1e-9)


def test_quick_bench_writes_json_png_and_table(model_dir, tmp_path):
    options = bench_options(True, seconds=0.32, steps=1, repeats=1, backends=("torch",))
    result = run_bench(model_dir, options, tmp_path)
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["summary"]["overlap"]["sum_of_stages_s"] > 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(written["components_ms"]["torch"]) == {"audio_encoder_1s", "reference_net", "motion_features",
                                                      "step_batch1", "step_batch2", "vae_decode_window",
                                                      "video_encode_window"}
    rows = {r["name"]: r for r in written["renders"]}
    assert rows["torch + overlap"]["frames"] == rows["torch eager (sequential)"]["frames"] == 8
    assert rows["torch + overlap"]["identical_to_eager"] is True  # overlap changes no frame
    assert "identical_to_eager" not in rows["guidance off (cfg 1)"]  # other settings: not comparable
    eager_rows = [name for name in rows if name.startswith("torch eager")]
    assert len(eager_rows) == os.cpu_count()  # eager at every thread count; the baseline is the fastest
    assert written["summary"]["eager_vs_optimised"]["eager"] == max(
        eager_rows, key=lambda name: rows[name]["frames_per_second"])
    assert written["summary"]["eager_vs_optimised"]["optimised"] in (*eager_rows, "torch + overlap")
    assert len(written["summary"]["eager_vs_optimised"]["speedup_by_round"]) == options.rounds
    # a guided pass pair does twice the work of one pass (counted, not timed)
    assert written["flops"]["step_batch2_gflop"] == pytest.approx(2 * written["flops"]["step_batch1_gflop"])
    table = format_table(result)
    assert all(name in table for name in rows) and "load average" in table


def test_bench_without_a_model_says_how_to_get_one(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("emo_rt.pipeline.DEFAULT_MODEL_DIR", tmp_path / "nothing")
    assert main(["bench", "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo-rt: error: ") and "--weights" in err and "--preset tiny" in err
    assert err.count("\n") == 1


def test_int8_levers_are_measured_against_eager_beside_the_fp32_engines():
    """With int8 engines the full bench renders them sequentially and overlapped, each checked
    against eager's frames (PSNR), after the fp32 onnxruntime rows; --quick builds no engines."""
    from emo_rt.bench import BenchOptions, levers
    from emo_rt.pipeline import RenderSettings

    base = RenderSettings(steps=2, cfg=1.0)
    rows = levers(BenchOptions(), base, ["torch", "onnxruntime", "onnxruntime-int8"], bf16=False)
    names = [r.name for r in rows]
    int8 = [r for r in rows if r.backend == "onnxruntime-int8"]
    assert [r.settings.overlap for r in int8] == [False, True] and all(r.comparable for r in int8)
    assert names.index("onnxruntime + overlap") < names.index(int8[0].name)
    assert not [r for r in levers(BenchOptions(), base, ["torch", "onnxruntime"], bf16=False)
                if r.backend == "onnxruntime-int8"]


def test_openvino_levers_follow_the_onnxruntime_rows_and_bf16_only_where_loaded():
    from emo_rt.bench import BenchOptions, levers
    from emo_rt.pipeline import RenderSettings

    base = RenderSettings(steps=2, cfg=1.0)
    rows = levers(BenchOptions(), base, ["torch", "onnxruntime", "openvino", "openvino-bf16"], bf16=False)
    names = [r.name for r in rows]
    ov = [r for r in rows if r.backend.startswith("openvino")]
    assert [(r.backend, r.settings.overlap) for r in ov] == [("openvino", False), ("openvino", True),
                                                             ("openvino-bf16", False), ("openvino-bf16", True)]
    assert all(r.comparable for r in ov) and names.index("onnxruntime + overlap") < names.index(ov[0].name)
    without = levers(BenchOptions(), base, ["torch", "openvino"], bf16=False)
    assert not [r for r in without if r.backend == "openvino-bf16"]

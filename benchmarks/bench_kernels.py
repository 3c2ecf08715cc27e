"""Fused temporal / reference attention (Triton) vs the unfused torch processors.

    python benchmarks/bench_kernels.py --count-only     # CPU: bytes the fusion saves per step
    python benchmarks/bench_kernels.py --csv out.csv    # GPU: times, bytes, bandwidth -> CSV

The count mirrors the processors line by line (models/attention.py vs kernels/*.py) at the
config's layer layout; the GPU run times both processors at the same shapes, checks they agree,
and reports achieved bandwidth against this device's measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from dataclasses import dataclass

import torch

from emo_rt.config import EmoConfig, sd15

TEMPORAL_ATTENTIONS_PER_MODULE = 2  # TemporalBlock.attn1, attn2 (AnimateDiff v2)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Layer:
    """`count` attention layers of one kind at one resolution level."""

    kind: str  # "temporal" | "reference"
    channels: int
    heads: int
    side: int  # latent side: S = L = side**2 tokens
    count: int


def attention_layers(config: EmoConfig) -> list[Layer]:
    """Temporal and reference attention layers of the Backbone, per level (models/unet.py's layout:
    down levels have layers_per_block layers, up levels one more, the mid block one; a temporal
    module follows every layer, a spatial transformer sits in every layer of attention levels)."""
    u, t = config.unet, config.temporal
    layers = []
    last = len(u.block_out_channels) - 1
    for level, channels in enumerate(u.block_out_channels):
        side = config.latent_size // 2**level
        per_level = 2 * u.layers_per_block + 1  # down + up
        temporal = per_level + (t.mid_block and level == last)
        reference = ((per_level if u.attention_levels[level] else 0)
                     + (u.mid_block_attention and level == last))
        layers.append(Layer("temporal", channels, t.num_attention_heads, side,
                            temporal * TEMPORAL_ATTENTIONS_PER_MODULE))
        if reference:
            layers.append(Layer("reference", channels, u.num_attention_heads, side, reference))
    return layers


def check_layout(config: EmoConfig, layers: list[Layer]) -> None:
    """The layout above must match the real Backbone (built on the meta device: no memory)."""
    from emo_rt.models.attention import Attention, ReferenceAttnProcessor, TemporalAttnProcessor
    from emo_rt.models.unet import UNet

    with torch.device("meta"):
        backbone = UNet(config, "backbone")
    kinds = {TemporalAttnProcessor: "temporal", ReferenceAttnProcessor: "reference"}
    built = collections.Counter(
        (kinds[type(m.processor)], m.to_q.in_features, m.heads) for m in backbone.modules()
        if isinstance(m, Attention) and type(m.processor) in kinds)
    counted = collections.Counter()
    for layer in layers:
        counted[(layer.kind, layer.channels, layer.heads)] += layer.count
    if built != counted:
        raise SystemExit(f"layer layout out of date: model has {dict(built)}, count has {dict(counted)}")


def temporal_elements(rows: int, frames: int, motion: int, channels: int) -> dict[str, int]:
    """Elements read + written by one temporal attention (R rows, T = n + f), to_out excluded.

    unfused (TemporalAttnProcessor): frames+pos (2RfC), motion+pos (2RnC), cat (2RTC),
    to_q (2RfC), to_k/to_v of the context (4RTC), SDPA reads q, k, v and writes (2RfC + 2RTC);
    weights Wq, Wk, Wv once (3C^2).
    fused: q/k/v of frames (6RfC), k/v of motion (4RnC), kernel reads q, k, v, writes
    (4RfC + 2RnC); weights Wq once, Wk and Wv twice (5C^2); position tables cached (0).
    """
    f, n, c, total = frames, motion, channels, frames + motion
    unfused = rows * c * (2 * f + 2 * n + 2 * total + 2 * f + 4 * total + 2 * f + 2 * total) + 3 * c * c
    kernel = rows * c * (4 * f + 2 * n)
    return {"unfused": unfused, "fused": rows * c * (6 * f + 4 * n) + 5 * c * c + kernel,
            "kernel": kernel}


def reference_elements(batch: int, frames: int, tokens: int, reference_tokens: int,
                       channels: int) -> dict[str, int]:
    """Elements read + written by one reference attention (N = B*f), to_out excluded.

    unfused (ReferenceAttnProcessor): q/k/v of x (6NLC), k/v of the reference (4BLrC),
    repeat_interleave (2BLrC + 2NLrC), cat (4NLC + 4NLrC), SDPA (2NLC + 2N(L+Lr)C).
    fused: the same projections, kernel reads q, k, v and the reference once, writes (4NLC + 2BLrC).
    Weights: Wq, Wk, Wv for x, Wk, Wv for the reference (5C^2) in both.
    """
    n, length, ref, c = batch * frames, tokens, reference_tokens, channels
    projections = 6 * n * length * c + 4 * batch * ref * c + 5 * c * c
    unfused = projections + (2 * batch * ref + 2 * n * ref) * c + (4 * n * length + 4 * n * ref) * c \
        + (2 * n * length + 2 * n * (length + ref)) * c
    kernel = (4 * n * length + 2 * batch * ref) * c
    return {"unfused": unfused, "fused": projections + kernel, "kernel": kernel}


def fusion_bytes(config: EmoConfig, batch: int = 1, element_bytes: int = 2) -> list[dict]:
    """Per layer group: bytes moved per denoising step by the unfused and fused processors."""
    f, n = config.num_frames, config.num_motion_frames
    rows = []
    for layer in attention_layers(config):
        s = layer.side**2
        if layer.kind == "temporal":
            e = temporal_elements(batch * s, f, n, layer.channels)
        else:  # reference tokens: the ReferenceNet's features at the same layer, Lr = L
            e = reference_elements(batch, f, s, s, layer.channels)
        rows.append({"kind": layer.kind, "channels": layer.channels, "side": layer.side,
                     "layers": layer.count,
                     **{k: v * element_bytes * layer.count for k, v in e.items()}})
    return rows


def print_fusion_bytes(config: EmoConfig, batch: int, element_bytes: int) -> None:
    rows = fusion_bytes(config, batch, element_bytes)
    mib = 2**20
    print(f"bytes per denoising step, batch {batch}, f={config.num_frames}, "
          f"n={config.num_motion_frames}, {element_bytes}-byte elements, q/k/v weights included, "
          f"to_out excluded (the same in both)")
    print(f"{'kind':<10}{'C':>6}{'latent':>8}{'layers':>8}{'unfused MiB':>13}{'fused MiB':>11}"
          f"{'saved MiB':>11}{'saved':>7}")
    for kind in ("temporal", "reference"):
        group = [r for r in rows if r["kind"] == kind]
        for r in group + [{"kind": "", "channels": "", "side": "", "layers": sum(g["layers"] for g in group),
                           "unfused": sum(g["unfused"] for g in group),
                           "fused": sum(g["fused"] for g in group)}]:
            side = f"{r['side']}x{r['side']}" if r["side"] else "total"
            saved = r["unfused"] - r["fused"]
            print(f"{r['kind']:<10}{r['channels']:>6}{side:>8}{r['layers']:>8}{r['unfused'] / mib:>13.1f}"
                  f"{r['fused'] / mib:>11.1f}{saved / mib:>11.1f}{saved / r['unfused']:>7.0%}")
    unfused, fused = sum(r["unfused"] for r in rows), sum(r["fused"] for r in rows)
    print(f"all {sum(r['layers'] for r in rows)} layers: {unfused / mib:.0f} MiB -> {fused / mib:.0f} MiB, "
          f"saved {(unfused - fused) / mib:.0f} MiB per step ({(unfused - fused) / unfused:.0%})")


# ---- GPU timing --------------------------------------------------------------------------------

def copy_bandwidth(gib: float = 1.0) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    from triton.testing import do_bench

    src = torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() / (ms * 1e-3)


def time_temporal(layer: Layer, config: EmoConfig, batch: int, dtype: torch.dtype) -> list[dict]:
    from triton.testing import do_bench

    from emo_rt.kernels.temporal_attention import TritonTemporalAttnProcessor, temporal_attention
    from emo_rt.kernels.testing import temporal_inputs
    from emo_rt.models.attention import Attention, TemporalAttnProcessor

    f, n, c, rows = config.num_frames, config.num_motion_frames, layer.channels, batch * layer.side**2
    attn = Attention(c, layer.heads, processor=TemporalAttnProcessor()).to("cuda", dtype).eval()
    frames = torch.randn(rows, f, c, device="cuda", dtype=dtype)
    motion = torch.randn(rows, n, c, device="cuda", dtype=dtype)
    positions = torch.randn(n + f, c, device="cuda", dtype=dtype)
    triton_processor = TritonTemporalAttnProcessor()
    kernel_args = temporal_inputs(rows, f, n, c, dtype, "cuda")
    out_proj = 2 * rows * f * c  # to_out reads and writes (N, f, C) in both processors
    elements = temporal_elements(rows, f, n, c)
    with torch.inference_mode():
        diff = (triton_processor(attn, frames, motion, positions)
                - TemporalAttnProcessor()(attn, frames, motion, positions)).abs().max().item()
        runs = {
            "unfused processor": (lambda: TemporalAttnProcessor()(attn, frames, motion, positions),
                                  elements["unfused"] + out_proj),
            "triton processor": (lambda: triton_processor(attn, frames, motion, positions),
                                 elements["fused"] + out_proj),
            "triton kernel": (lambda: temporal_attention(*kernel_args, layer.heads), elements["kernel"]),
        }
        return [{"op": "temporal", "shape": f"R={rows} f={f} n={n} C={c} h={layer.heads}",
                 "impl": impl, "ms": do_bench(fn, return_mode="median"),
                 "bytes": count * dtype.itemsize, "flops": 0, "max_abs_diff": diff}
                for impl, (fn, count) in runs.items()]


def time_reference(layer: Layer, config: EmoConfig, batch: int, dtype: torch.dtype) -> list[dict]:
    from triton.testing import do_bench

    from emo_rt.kernels.reference_attention import TritonReferenceAttnProcessor, reference_attention
    from emo_rt.kernels.testing import reference_inputs
    from emo_rt.models.attention import Attention, ReferenceAttnProcessor

    f, c, length = config.num_frames, layer.channels, layer.side**2
    attn = Attention(c, layer.heads, processor=ReferenceAttnProcessor()).to("cuda", dtype).eval()
    x = torch.randn(batch * f, length, c, device="cuda", dtype=dtype)
    reference = torch.randn(batch, length, c, device="cuda", dtype=dtype)
    triton_processor = TritonReferenceAttnProcessor()
    kernel_args = reference_inputs(batch, f, length, length, c, dtype, "cuda")
    out_proj = 2 * batch * f * length * c
    elements = reference_elements(batch, f, length, length, c)
    flops = 4 * batch * f * length * 2 * length * c  # QK^T and PV over L + Lr = 2L keys
    with torch.inference_mode():
        diff = (triton_processor(attn, x, reference, f)
                - ReferenceAttnProcessor()(attn, x, reference, f)).abs().max().item()
        runs = {
            "unfused processor": (lambda: ReferenceAttnProcessor()(attn, x, reference, f),
                                  elements["unfused"] + out_proj),
            "triton processor": (lambda: triton_processor(attn, x, reference, f),
                                 elements["fused"] + out_proj),
            "triton kernel": (lambda: reference_attention(*kernel_args, f, layer.heads),
                              elements["kernel"]),
        }
        return [{"op": "reference", "shape": f"B={batch} f={f} L=Lr={length} C={c} h={layer.heads}",
                 "impl": impl, "ms": do_bench(fn, return_mode="median"),
                 "bytes": count * dtype.itemsize, "flops": flops, "max_abs_diff": diff}
                for impl, (fn, count) in runs.items()]


def run_gpu(config: EmoConfig, batch: int, dtype: torch.dtype, csv_path: str) -> None:
    bandwidth = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: measured copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    results = []
    for layer in attention_layers(config):
        timer = time_temporal if layer.kind == "temporal" else time_reference
        results += timer(layer, config, batch, dtype)
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["op", "shape", "dtype", "impl", "ms", "bytes", "GB/s",
                                                "of_copy_bw", "TFLOP/s", "max_abs_diff"])
        writer.writeheader()
        for r in results:
            seconds = r["ms"] * 1e-3
            row = {**r, "dtype": str(dtype).removeprefix("torch."), "GB/s": r["bytes"] / seconds / 1e9,
                   "of_copy_bw": r["bytes"] / seconds / bandwidth,
                   "TFLOP/s": r["flops"] / seconds / 1e12}
            row.pop("flops")
            writer.writerow(row)
            print(f"{row['op']:<10}{row['shape']:<36}{row['impl']:<19}{row['ms']:>8.3f} ms"
                  f"{row['GB/s']:>8.0f} GB/s{row['of_copy_bw']:>6.0%} of copy{row['TFLOP/s']:>7.1f} TFLOP/s"
                  f"  max|diff| {row['max_abs_diff']:.1e}")
    print(f"wrote {csv_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count-only", action="store_true", help="only the CPU byte count")
    parser.add_argument("--batch", type=int, default=1, help="windows per step (2 with CFG)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--csv", default="bench_kernels.csv")
    args = parser.parse_args()
    config, dtype = sd15(), DTYPES[args.dtype]
    check_layout(config, attention_layers(config))
    print_fusion_bytes(config, args.batch, dtype.itemsize)
    if args.count_only:
        return
    if not torch.cuda.is_available():
        print("GPU timing skipped: CUDA is not available on this machine (the byte count above "
              "needs none)")
        sys.exit(0)
    run_gpu(config, args.batch, dtype, args.csv)


if __name__ == "__main__":
    main()

"""GPU scale on paper (issue 25): counted FLOPs per video frame of the `sd15` preset at 512x512, and the
frames/s they imply on one NVIDIA H100 SXM at a stated model-FLOP utilisation.

Every part is built on the meta device (no weights, no memory, nothing computed) and driven through
the calls `emo-rt bench` times (`emo_rt.bench.ComponentProbe` on `TorchComponents`); torch's
FlopCounterMode counts matmuls, convolutions and attention (on meta, scaled_dot_product_attention
runs its math decomposition, so attention is counted as its two `bmm`s; the bench's CPU flash-op
formula is in the mapping too). Per frame: the Backbone pass over a window of f frames / f (batch 1:
no guidance; batch 2: the guided pair), the motion features (ReferenceNet over n motion frames, once
per window) / f, the VAE decode of a window / f, the audio projector and speed encoder (once per
window) / f, and wav2vec2 over 1 s of audio / fps. Once per identity, not per frame: the ReferenceNet,
the VAE encode of the reference and the FaceLocator.

Not counted: elementwise ops, norms, softmax, memory traffic, launch overhead. The fps figures are
therefore an upper bound at the utilisation named.

    python benchmarks/sd15_flops.py --out /tmp/sd15_flops.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from emo_rt.bench import ComponentProbe, _cpu_sdpa_flops
from emo_rt.config import PRESETS
from emo_rt.io.files import write_json_atomic
from emo_rt.models import EmoModel
from emo_rt.runtime.components import TorchComponents

# NVIDIA H100 SXM5 datasheet: 1,979 TFLOP/s BF16 tensor core *with sparsity*; dense is half of that
H100_SXM_DENSE_BF16 = 989.4e12
REAL_TIME_FPS = 25.0
OPS: dict[str, float] = defaultdict(float)  # GFLOP per op over every count, for the record


def counted(name: str, fn) -> int:
    started = time.perf_counter()
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    for op, flops in counter.get_flop_counts()["Global"].items():
        OPS[str(op)] += flops / 1e9
    total = counter.get_total_flops()
    print(f"  {name:34} {total / 1e9:12.2f} GFLOP  ({time.perf_counter() - started:.1f} s)", flush=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sd15", choices=sorted(PRESETS))
    parser.add_argument("--anchor", choices=("none", "residual"), help="override the preset's anchor")
    parser.add_argument("--utilisation", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    config = PRESETS[args.preset]()
    if args.anchor:
        config = dataclasses.replace(config, anchor=args.anchor)
    f, fps = config.num_frames, config.fps
    print(f"{args.preset}: {config.resolution} px, latents {config.latent_size}x{config.latent_size}x"
          f"{config.vae.latent_channels}, f={f}, n={config.num_motion_frames}, anchor {config.anchor}; "
          "building on meta", flush=True)
    started = time.perf_counter()
    with torch.device("meta"):
        # no grad: FlopCounterMode's module tracker hooks parameters that need grad, which fails under the
        # components' inference_mode (wav2vec2's weight-normed conv)
        model = EmoModel(config).requires_grad_(False)
    components = TorchComponents(model, attention="sdpa")
    probe = ComponentProbe(components)  # its inputs are CPU tensors, cast to meta by the components
    print(f"built in {time.perf_counter() - started:.1f} s; counting", flush=True)

    audio_features = probe.audio_encoder()[:, : f + 2 * config.audio.context_frames]
    speed = torch.ones(1, f + 2 * config.speed.context_frames)
    flops = {
        "step_batch1": counted("Backbone pass, batch 1 (window)", lambda: probe.step(1)),
        "step_batch2": counted("Backbone pass, batch 2 (window)", lambda: probe.step(2)),
        "motion_features": counted("motion features (window)", probe.motion),
        "vae_decode_window": counted("VAE decode (window)", probe.vae_decode),
        "projector_speed_window": counted("audio projector + speed (window)", lambda: (
            components.project_audio(audio_features), components.encode_speed(speed))),
        "audio_encoder_1s": counted("wav2vec2, 1 s of audio", probe.audio_encoder),
        "reference_net": counted("ReferenceNet (per identity)", probe.reference_net),
        "identity_other": counted("VAE encode + FaceLocator (identity)", lambda: (
            components.encode_images(torch.zeros(1, 3, config.resolution, config.resolution)),
            components.locate_face(torch.zeros(1, 1, config.resolution, config.resolution)))),
    }
    g = {k: v / 1e9 for k, v in flops.items()}
    per_frame = {"step_pass_batch1": g["step_batch1"] / f, "step_pair_batch2": g["step_batch2"] / f,
                 "motion_features": g["motion_features"] / f, "vae_decode": g["vae_decode_window"] / f,
                 "projector_speed": g["projector_speed_window"] / f, "audio_encoder": g["audio_encoder_1s"] / fps}
    fixed = sum(per_frame[k] for k in ("motion_features", "vae_decode", "projector_speed", "audio_encoder"))
    settings = [(f"{k} step{'s' * (k > 1)}, 1 pass each (distilled)", k * per_frame["step_pass_batch1"] + fixed)
                for k in (1, 2, 4)]
    settings += [("8 guided steps, batch 2 (teacher)", 8 * per_frame["step_pair_batch2"] + fixed),
                 ("8 guided steps, 2 passes (teacher)", 16 * per_frame["step_pass_batch1"] + fixed)]
    rows = [{"setting": name, "gflop_per_frame": total,
             **{f"fps_at_{round(100 * u)}pct": u * H100_SXM_DENSE_BF16 / (total * 1e9) for u in args.utilisation}}
            for name, total in settings]

    print("\nGFLOP per frame: " + ", ".join(f"{k} {v:.2f}" for k, v in per_frame.items()))
    print(f"once per identity: ReferenceNet {g['reference_net']:.1f} GFLOP, VAE encode + FaceLocator "
          f"{g['identity_other']:.1f} GFLOP")
    print(f"\nH100 SXM dense BF16 peak {H100_SXM_DENSE_BF16 / 1e12:.1f} TFLOP/s (no sparsity); "
          f"real time = {REAL_TIME_FPS:g} fps")
    util = [f"fps @ {round(100 * u)}% MFU" for u in args.utilisation]
    print(f"{'setting':40}{'GFLOP/frame':>12}" + "".join(f"{h:>16}" for h in util))
    for row in rows:
        print(f"{row['setting']:40}{row['gflop_per_frame']:12.1f}"
              + "".join(f"{row[f'fps_at_{round(100 * u)}pct']:16.1f}" for u in args.utilisation))
    print("\nops counted (GFLOP over every count): "
          + ", ".join(f"{op} {v:.0f}" for op, v in sorted(OPS.items(), key=lambda kv: -kv[1])))

    if args.out:
        write_json_atomic(args.out, {
            "preset": args.preset, "resolution": config.resolution, "num_frames": f, "fps": fps,
            "num_motion_frames": config.num_motion_frames, "anchor": config.anchor, "torch": torch.__version__,
            "gflop": g, "gflop_per_frame": per_frame, "rows": rows, "ops_gflop": dict(OPS),
            "h100_sxm_dense_bf16_tflops": H100_SXM_DENSE_BF16 / 1e12, "real_time_fps": REAL_TIME_FPS,
            "not_counted": "elementwise ops, norms, softmax, memory traffic: fps is an upper bound"}, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

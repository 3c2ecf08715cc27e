"""Score an autoencoder's round trip (encode + decode, no denoising) on held-out frames.

    OMP_NUM_THREADS=1 python lab/ae_design/evaluate.py MODEL_DIR --name NAME [--emo-model]

MODEL_DIR is a diffusers save_pretrained directory (AutoencoderKL or AutoencoderTiny), or with
--emo-model an emo-rt model directory (its VAE is scored, e.g. emo_rt/default_model).
Held-out sets: the standard corpus's test split (12 identities never trained on) and every clip of
the seed-7 corpus (identities of a seed never trained on). Per set: PSNR over the whole 128x128 frame, inside
each frame's face box, and outside the clip's face mask (background); the face evaluator's
brow-raise and mouth-opening r against the ground truth on the round-tripped frames and on the real
frames (emo-rt eval's convention: Pearson r per clip, mean over the clips whose true curve moves,
as in benchmarks/eval_vae_ceiling.py). Plus decoder/encoder GFLOP per frame (FlopCounterMode) and
decoder CPU ms/frame (1 thread, batch 8). Writes lab/ae_design/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import aelib  # noqa: E402

from emo_rt.eval import metrics  # noqa: E402
from emo_rt.eval.data import HeldOutData  # noqa: E402
from emo_rt.eval.evaluator import Evaluator, to_tensor  # noqa: E402

HOME = Path.home() / "emo-runs"
SETS = {"test": (HOME / "corpus/shards", HOME / "corpus/synth", ("test",)),
        "seed7": (HOME / "corpus7/shards", HOME / "corpus7/synth", ("train", "val", "test"))}
RESULTS = Path(__file__).parent / "results"


def load_any(path: str, emo_model: bool):
    if emo_model:
        from emo_rt.models import EmoModel

        return EmoModel.from_pretrained(path).vae
    return aelib.load(path)


@torch.no_grad()
def round_trip(vae, frames: np.ndarray, batch: int = 25) -> np.ndarray:
    out = []
    for i in range(0, len(frames), batch):
        z, _ = aelib.encode(vae, to_tensor(frames[i:i + batch]))
        y = aelib.decode(vae, z).clamp(-1, 1)
        out.append(((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def box_mask(box, size: int) -> np.ndarray:
    x, y, w, h = (int(round(v)) for v in box)
    m = np.zeros((size, size), bool)
    m[max(0, y):y + h, max(0, x):x + w] = True
    return m


def framewise_psnr(rec: np.ndarray, real: np.ndarray, masks: np.ndarray) -> float:
    """Mean over frames of the PSNR (dB, 0..255 levels, all channels) over each frame's mask (N, R, R)."""
    err = (rec.astype(np.float64) - real.astype(np.float64)) ** 2  # (N, R, R, 3)
    m = masks[..., None].astype(np.float64)
    mse = (err * m).sum(axis=(1, 2, 3)) / (3 * m.sum(axis=(1, 2, 3)))
    mse = np.maximum(mse, 255.0 ** 2 * 10 ** (-metrics.PSNR_CAP_DB / 10))
    return float(np.mean(10 * np.log10(255.0 ** 2 / mse)))


def score_set(vae, evaluator, shards, corpus, splits, max_clips=None) -> dict:
    data = HeldOutData(shards, corpus)
    entries = [e for s in splits for e in data.index.split(s) if e.has_audio and data.sidecar_path(e).is_file()]
    entries = entries[:max_clips] if max_clips else entries
    psnr_all, psnr_face, psnr_bg, clips = [], [], [], []
    r = {k: {"real": [], "vae": []} for k in ("brow_raise", "mouth_open")}
    for entry in entries:
        clip = data.load(entry)
        rec = round_trip(vae, clip.frames)
        side = clip.frames.shape[1]
        psnr_all.append(framewise_psnr(rec, clip.frames, np.ones((len(rec), side, side), bool)))
        psnr_face.append(framewise_psnr(rec, clip.frames, np.stack([box_mask(b, side) for b in clip.face_boxes])))
        psnr_bg.append(framewise_psnr(rec, clip.frames, np.broadcast_to(~clip.face_mask.astype(bool), rec.shape[:3])))
        a, b = evaluator.measure(clip.frames), evaluator.measure(rec)
        row = {"clip": entry.id, "psnr": psnr_all[-1], "psnr_face": psnr_face[-1], "psnr_bg": psnr_bg[-1]}
        for k in r:
            moves = metrics.varies(clip.truth[k])
            real, vae_r = metrics.pearson(a[k], clip.truth[k]), metrics.pearson(b[k], clip.truth[k])
            if moves:
                r[k]["real"].append(real)
                r[k]["vae"].append(vae_r)
            row[f"{k}_r_real"], row[f"{k}_r_vae"], row[f"{k}_varies"] = real, vae_r, moves
        clips.append(row)
    return {"clips": len(entries), "frames": int(sum(e.num_frames for e in entries)),
            "psnr": float(np.mean(psnr_all)), "psnr_face": float(np.mean(psnr_face)),
            "psnr_bg": float(np.mean(psnr_bg)),
            "brow_r_vae": float(np.mean(r["brow_raise"]["vae"])), "brow_r_real": float(np.mean(r["brow_raise"]["real"])),
            "mouth_r_vae": float(np.mean(r["mouth_open"]["vae"])), "mouth_r_real": float(np.mean(r["mouth_open"]["real"])),
            "brow_clips": len(r["brow_raise"]["vae"]), "mouth_clips": len(r["mouth_open"]["vae"]),
            "per_clip": clips}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--name", required=True)
    p.add_argument("--emo-model", action="store_true")
    p.add_argument("--max-clips", type=int, help="per set (quick looks only)")
    p.add_argument("--seed7-clips", type=int, help="score only the first N seed-7 clips (grid candidates: 20 of 40)")
    p.add_argument("--sets", nargs="+", default=list(SETS))
    args = p.parse_args()
    torch.set_num_threads(1)
    vae = load_any(args.model, args.emo_model).eval()
    evaluator = Evaluator.from_pretrained()
    t = time.perf_counter()
    result = {"name": args.name, "model": str(args.model), "class": type(vae).__name__,
              "config": {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}}
    enc, dec = aelib.gflops(vae)
    result.update(encoder_gflop=enc, decoder_gflop=dec, decoder_ms_per_frame=aelib.decoder_ms(vae),
                  decoder_params=sum(p.numel() for p in vae.decoder.parameters()),
                  encoder_params=sum(p.numel() for p in vae.encoder.parameters()))
    training = Path(args.model) / ".." / "training.json"
    if training.is_file():
        result["training"] = json.loads(training.read_text())
    for name in args.sets:
        limit = args.seed7_clips if name == "seed7" and args.seed7_clips else args.max_clips
        result[name] = score_set(vae, evaluator, *SETS[name], max_clips=limit)
        s = result[name]
        print(f"{name}: PSNR {s['psnr']:.2f} face {s['psnr_face']:.2f} bg {s['psnr_bg']:.2f} | brow r "
              f"{s['brow_r_vae']:.3f} (real {s['brow_r_real']:.3f}) mouth r {s['mouth_r_vae']:.3f} "
              f"(real {s['mouth_r_real']:.3f})", flush=True)
    result["eval_seconds"] = time.perf_counter() - t
    print(f"decoder {dec:.3f} GFLOP {result['decoder_ms_per_frame']:.1f} ms/frame, encoder {enc:.3f} GFLOP")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Speed of the synthetic corpus generator (emo-rt synth-data): clips per second, total seconds.

    python benchmarks/bench_synth.py                     # 100 clips x 5 s at 256x256, all cores
    python benchmarks/bench_synth.py --clips 20 --workers 1
    python benchmarks/bench_synth.py --sheet /tmp/synth_sheet.png   # also a contact sheet of frames
    python benchmarks/bench_synth.py --out /tmp/synth100 --quality  # keep it; measure ground truth

The target (issue 4) is 100 clips of 5 s at 256x256 in under 120 s on the 2-core CPU machine. The load
average is printed before and after: other processes on the machine slow the run down.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from emo_rt.io import preview
from emo_rt.io.video import read_video
from emo_rt.training.data.synth import generate_corpus

TARGET_SECONDS = 120.0   # for 100 clips x 5 s at 256x256


def contact_sheet(corpus: Path, path: Path, rows: int = 8) -> None:
    """One row per identity: first frame, widest mouth, largest |yaw|, deepest blink, and the widest
    mouth at 128x128 (shown 2x) -- the resolution the default model trains at."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    seen, picked = set(), []
    for clip in manifest["clips"]:
        if clip["identity"] not in seen:
            seen.add(clip["identity"])
            picked.append(clip)
    tiles, labels = [], []
    for clip in picked[:rows]:
        fr = json.loads((corpus / clip["sidecar"]).read_text())["frames"]
        wanted = [0, int(np.argmax(fr["mouth_open"])), int(np.argmax(np.abs(fr["yaw"]))), int(np.argmax(fr["blink"]))]
        frames, _ = read_video(corpus / clip["video"])
        tiles += [frames[t] for t in wanted]
        labels += [f"t{t} m{fr['mouth_open'][t]:.2f} y{fr['yaw'][t]:+.0f}" for t in wanted]
        size = frames.shape[1]
        small = cv2.resize(frames[wanted[1]], (128, 128), interpolation=cv2.INTER_AREA)
        tiles.append(cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST))
        labels.append("128 px")
    preview.contact_sheet(tiles, path, columns=len(wanted) + 1, frame_labels=labels)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def quality(corpus: Path, frames_per_clip: int = 5) -> None:
    """Ground truth vs measurement on the corpus: mediapipe 0.10.21 face detection on decoded mp4
    frames (rate, IoU with the sidecar face box), mouth_open vs the wav's frame RMS (Pearson r),
    mouth_open in silence, speed level vs mean head speed (Spearman)."""
    import mediapipe as mp
    import soundfile as sf

    manifest = json.loads((corpus / "manifest.json").read_text())
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    total, ious, offsets, rs, silent, levels, speeds = 0, [], [], [], [], [], []
    for clip in manifest["clips"]:
        side = json.loads((corpus / clip["sidecar"]).read_text())
        fr, n = side["frames"], side["num_frames"]
        wanted = set(np.linspace(0, n - 1, frames_per_clip).round().astype(int).tolist())
        with av.open(str(corpus / clip["video"])) as container:
            for t, frame in enumerate(container.decode(video=0)):
                if t not in wanted:
                    continue
                total += 1
                rgb = frame.to_ndarray(format="rgb24")
                result = detector.process(rgb)
                if result.detections:
                    h, w = rgb.shape[:2]
                    bb = result.detections[0].location_data.relative_bounding_box
                    det = (bb.xmin * w, bb.ymin * h, bb.width * w, bb.height * h)
                    box = fr["face_box"][t]
                    ious.append(_iou(det, box))
                    offsets.append([(det[0] - box[0]) / box[2], (det[1] - box[1]) / box[3],
                                    det[2] / box[2], det[3] / box[3]])
        wave, _ = sf.read(corpus / clip["audio"], dtype="float32")
        rms = np.sqrt(np.mean(wave.reshape(n, -1).astype(np.float64) ** 2, axis=1))
        mouth = np.array(fr["mouth_open"])
        rs.append(np.corrcoef(mouth, rms)[0, 1])
        level = np.percentile(rms[rms > 0.05 * rms.max()], 90)
        quiet = rms < 0.02 * level
        quiet &= np.append(quiet[1:], True) & np.append(quiet[2:], [True, True])
        silent.extend(mouth[quiet].tolist())
        levels.append(side["speed_level"])
        speeds.append(float(np.mean(fr["head_speed"])))
    detector.close()
    ious_a = np.array(ious)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    print(f"face detection (mediapipe 0.10.21, short range): {len(ious)}/{total} frames "
          f"({len(ious) / total:.1%}) of {len({c['identity'] for c in manifest['clips']})} identities")
    print(f"IoU(detected, sidecar face_box): mean {ious_a.mean():.3f} median {np.median(ious_a):.3f} "
          f"min {ious_a.min():.3f} p5 {np.percentile(ious_a, 5):.3f}; >=0.6: {(ious_a >= 0.6).mean():.1%}, "
          f">=0.8: {(ious_a >= 0.8).mean():.1%}")
    off = np.array(offsets)
    print("detected box vs face_box (dx/w, dy/h, w ratio, h ratio): mean "
          f"{np.round(off.mean(0), 3).tolist()} std {np.round(off.std(0), 3).tolist()}")
    print(f"mouth_open vs frame RMS, Pearson r per clip: mean {np.mean(rs):.3f} min {np.min(rs):.3f}")
    print(f"mouth_open in silent frames: max {max(silent, default=0):.4f} over {len(silent)} frames")
    print(f"speed level vs mean head speed, Spearman: {np.corrcoef(rank(levels), rank(speeds))[0, 1]:.3f} "
          f"(head speed {min(speeds):.3f}..{max(speeds):.3f} deg/frame)")


def cpu_seconds_per_clip(clips: int, seconds: float, size: int, seed: int) -> float:
    """CPU time (this process + its espeak-ng children) of rendering `clips` clips in-process: what a
    clip costs on an otherwise idle core, whatever else the machine is running."""
    with tempfile.TemporaryDirectory(prefix="bench_synth_probe_") as tmp:
        before = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        generate_corpus(Path(tmp), clips, seed + 1, size=size, seconds=seconds, workers=1, progress=False)
        after = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    return (after - before) / clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the corpus here (default: a temporary folder, removed)")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG of sample frames here")
    parser.add_argument("--quality", action="store_true", help="also measure detection, IoU, correlations")
    parser.add_argument("--probe", type=int, default=6, help="clips rendered in-process to measure CPU s per clip")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_"))
    if args.out is None or not (out / "manifest.json").exists():
        shutil.rmtree(out / "clips", ignore_errors=True)    # time a full run, not a resumed one
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    generate_corpus(out, args.clips, args.seed, size=args.size, seconds=args.seconds, workers=args.workers,
                    progress=True)
    total = time.perf_counter() - start
    load_after = os.getloadavg()[0]
    frames = args.clips * round(args.seconds * 25)
    size_mb = sum(p.stat().st_size for p in (out / "clips").iterdir()) / 2**20
    print(f"clips {args.clips} x {args.seconds:g} s at {args.size}x{args.size}, workers {args.workers}, "
          f"cpus {os.cpu_count()}")
    print(f"total {total:.1f} s | {args.clips / total:.2f} clips/s | {frames / total:.0f} frames/s | "
          f"{size_mb:.0f} MiB written")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")
    if args.probe:
        cpu = cpu_seconds_per_clip(args.probe, args.seconds, args.size, args.seed)
        ideal = cpu * args.clips / min(args.workers, os.cpu_count() or 1)
        print(f"CPU per clip {cpu:.2f} s (in-process probe, {args.probe} clips) -> {args.clips} clips on "
              f"{min(args.workers, os.cpu_count() or 1)} idle cores: ~{ideal:.0f} s + worker start-up")
    if (args.clips, args.seconds, args.size) == (100, 5.0, 256):
        verdict = "within" if total < TARGET_SECONDS else "OVER"
        print(f"target: 100 clips x 5 s in < {TARGET_SECONDS:.0f} s -> {verdict} (measured wall time)")
    if args.quality:
        quality(out)
    if args.sheet:
        contact_sheet(out, args.sheet)
        print(f"contact sheet: {args.sheet}")
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()

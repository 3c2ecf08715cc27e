"""lab (not installed): does int8 (onnxruntime static quantisation, VNNI) speed up the step network
and the decoder on this CPU, and by how much does it change their outputs?

    python lab/int8/probe.py ENGINE_DIR [--threads 1]

ENGINE_DIR: `emo-rt build-engines --out ENGINE_DIR` of the shipped model. Calibration inputs are the
step's and decoder's real inputs, captured from a torch render of a corpus test clip.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from emo_rt.eval.data import HeldOutData
from emo_rt.eval.runner import clip_reference
from emo_rt.pipeline import EmoPipeline

HOME = Path.home() / "emo-runs"


def step_inputs(args: tuple) -> dict[str, np.ndarray]:
    """Components.denoise's arguments -> the step engine's named inputs (as OrtComponents names them)."""
    z, t, ref, motion, audio, speed, face, *anchor = args
    out = {"noisy_latents": z, "timestep": t.reshape(-1).expand(z.shape[0]), "audio_tokens": audio,
           "speed_tokens": speed, "face_latents": face}
    if anchor:
        out["anchor_latents"] = anchor[0]
    out.update({f"reference_feature_{i}": x for i, x in enumerate(ref)})
    out.update({f"motion_feature_{j}": x for j, x in enumerate(motion)})
    return {k: v.detach().float().contiguous().numpy() for k, v in out.items()}


def capture(clips: int) -> tuple[list[dict], list[dict]]:
    pipe = EmoPipeline.from_pretrained()
    comp = pipe.components
    steps, decodes = [], []
    denoise, decode = comp.denoise, comp.decode_latents
    comp.denoise = lambda *a: (steps.append(step_inputs(a)), denoise(*a))[1]
    comp.decode_latents = lambda z: (decodes.append({"latents": z.float().numpy().copy()}), decode(z))[1]
    data = HeldOutData(HOME / "corpus" / "shards", HOME / "corpus" / "synth")
    for entry in data.entries("test")[:clips]:
        clip = data.load(entry)
        list(pipe(clip_reference(clip, 0), clip.audio.astype(np.float32), pipe.defaults))
    return steps, decodes


class Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def timed(session: ort.InferenceSession, feed: dict, repeats: int = 20) -> tuple[float, np.ndarray]:
    out = session.run(None, feed)[0]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("engines")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ops", default="MatMul,Conv,Gemm")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps, decodes = capture(2)
    print(f"captured {len(steps)} step calls, {len(decodes)} decodes")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    for name, feeds in (("step", steps), ("vae_decoder", decodes)):
        src = next(Path(args.engines).glob(f"{name}.fp32.*.onnx"))
        pre = Path("/tmp") / f"{name}.pre.onnx"
        dst = Path("/tmp") / f"{name}.int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(feeds[::3]), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=args.ops.split(","))
        fp32 = ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
        feed = feeds[len(feeds) // 2]
        t32, y32 = timed(fp32, feed)
        t8, y8 = timed(int8, feed)
        err = np.sqrt(np.mean((y8 - y32) ** 2)) / (np.std(y32) + 1e-12)
        print(f"{name}: fp32 {t32:.1f} ms, int8 {t8:.1f} ms ({t32 / t8:.2f}x), relative RMS error {err:.4f}")


if __name__ == "__main__":
    main()

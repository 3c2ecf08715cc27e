"""Does the model use the pitch at all? Guidance on the pitch alone: each denoising step adds
`scale` x (conditional - conditional with the pitch held at the voiced median) to the usual
classifier-free guided prediction, then the held-out clips are scored like `emo-rt eval`.
If the brows followed the pitch even weakly, a large scale would raise brow r.

    python benchmarks/pitch_guidance.py --scale 8 --out runs/pitch8 [--weights DIR] [--clips 12]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from emo_rt.eval import EvalSettings, HeldOutData, evaluate
from emo_rt.eval.report import check_out_dir, table, write_report
from emo_rt.models.prosody import fourier_encode, prosody_values
from emo_rt.pipeline import EmoPipeline, default_model_dir


class PitchGuidedPipeline(EmoPipeline):
    """EmoPipeline with a third Backbone pass per step: the same conditions, the pitch neutralised.
    Needs `config.audio.prosody` without `prosody_hold` (the prosody row is the last feature row),
    batched guidance, and audio within one `audio_chunk_seconds` chunk (the neutral row is computed
    over the whole file, as the encoder computes the real one for such audio)."""

    pitch_scale: float = 0.0
    _neutral: torch.Tensor | None = None  # (1, F, L, D) features of the current file, pitch at 0
    _neutral_audio: torch.Tensor | None = None  # (1, f, T, D) audio tokens of the current window

    def audio_features(self, waveform: np.ndarray, num_frames: int, chunk_seconds: float,
                       context_seconds: float = 1.0) -> torch.Tensor:
        features = super().audio_features(waveform, num_frames, chunk_seconds, context_seconds)
        values = prosody_values(torch.from_numpy(waveform)[None], num_frames, self.config.audio.sample_rate)
        values[..., 0] = 0  # pitch (semitones from the voiced median / 6): no accents anywhere
        self._neutral = features.clone()
        self._neutral[:, :, -1] = fourier_encode(values, features.shape[-1]).to(features)
        return features

    def window_tokens(self, features, speeds, start):
        audio, speed = super().window_tokens(features, speeds, start)
        self._neutral_audio = super().window_tokens(self._neutral.to(features.device), speeds, start)[0]
        return audio, speed

    def predict(self, z_in, t, cond, uncond, cfg):
        ref, motion, audio, speed, face = cond  # the (conditional, unconditional) pair: batched guidance
        if uncond is not None or audio.shape[0] != 2:
            raise ValueError("PitchGuidedPipeline needs batched guidance (cfg != 1, batch_guidance on)")
        pred = self.components.denoise(z_in.expand(2, -1, -1, -1, -1), t.reshape(1).expand(2), *cond).float()
        with_pitch, unconditional = pred[:1], pred[1:]
        guided = unconditional + cfg * (with_pitch - unconditional)
        if not self.pitch_scale:
            return guided
        neutral = ([x[:1] for x in ref], [m[:1] for m in motion], self._neutral_audio, speed[:1], face[:1])
        without = self.components.denoise(z_in, t.reshape(1), *neutral).float()
        return guided + self.pitch_scale * (with_pitch - without)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, required=True, help="weight of the pitch-only guidance term")
    parser.add_argument("--out", required=True, help="report folder (as emo-rt eval writes it)")
    parser.add_argument("--weights", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--data", default="corpus/shards")
    parser.add_argument("--corpus", default="corpus/synth")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--cfg", type=float, default=3.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    check_out_dir(args.out)
    weights = args.weights or default_model_dir()
    pipeline = PitchGuidedPipeline.from_pretrained(weights)
    if not pipeline.config.audio.prosody or pipeline.config.audio.prosody_hold > 0:
        raise SystemExit(f"{weights}: needs one prosody row (audio.prosody on, prosody_hold 0) to neutralise")
    pipeline.pitch_scale = args.scale
    settings = EvalSettings(clips=args.clips, steps=8, cfg=args.cfg, drift_seconds=0, speed_seconds=0)
    report = {"weights": str(weights), "backend": f"torch, pitch guidance {args.scale:g}",
              **evaluate(pipeline, HeldOutData(args.data, args.corpus), settings, progress=False)}
    write_report(report, args.out)
    print(table(report))


if __name__ == "__main__":
    main()

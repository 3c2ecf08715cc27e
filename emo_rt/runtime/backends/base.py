"""EngineComponents: the `Components` interface on top of per-sub-network engines. This maps each
pipeline call to an engine's named inputs and outputs (from the manifest records); subclasses only
say how one engine runs (`_execute`). Shapes outside what an engine was built for are split where
that is exact (batch items, image chunks) and refused with one clear line otherwise.
"""

from __future__ import annotations

import torch

from emo_rt.config import EmoConfig
from emo_rt.models.prosody import prosody_row
from emo_rt.runtime.backends.manifest import EngineRecord

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


class EngineComponents:
    name = "engines"

    def __init__(self, config: EmoConfig, records: dict[str, EngineRecord], device: torch.device):
        self.config = config
        self.records = records
        self.device = device

    # ---- what a backend implements ----------------------------------------------------------
    def _execute(self, record: EngineRecord, inputs: dict[str, torch.Tensor],
                 output_shapes: dict[str, tuple[int, ...]]) -> list[torch.Tensor]:
        """Run one engine on contiguous inputs of the engine's dtypes, on self.device."""
        raise NotImplementedError(f"{type(self).__name__} must implement _execute")

    # ---- shared plumbing ----------------------------------------------------------------------
    def run(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run engine `name` on named tensors (any dtype/device): outputs in the engine's order."""
        record = self.records[name]
        sizes = record.resolve({k: tuple(v.shape) for k, v in inputs.items()})
        prepared = {info.name: inputs[info.name].to(self.device, TORCH_DTYPES[info.dtype]).contiguous()
                    for info in record.inputs}
        return self._execute(record, prepared, record.output_shapes(sizes))

    def _per_item(self, name: str, input_name: str, x: torch.Tensor) -> list[torch.Tensor]:
        """Engines built for batch 1 (reference, motion, face locator): one call per item."""
        outs = [self.run(name, **{input_name: x[i: i + 1]}) for i in range(x.shape[0])]
        return [torch.cat(parts) for parts in zip(*outs)] if len(outs) > 1 else outs[0]

    def _chunked(self, name: str, input_name: str, x: torch.Tensor) -> torch.Tensor:
        """VAE engines take up to `images` max per call: longer batches go in chunks."""
        step = self.records[name].max_size("images")
        parts = [self.run(name, **{input_name: x[i: i + step]})[0] for i in range(0, x.shape[0], step)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    # ---- the Components interface ---------------------------------------------------------------
    def encode_audio(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        # only the length of frame_grid is read (export/wrappers.AudioFrames)
        features = self.run("audio_encoder", waveform=waveform, frame_grid=torch.zeros(num_frames))[0]
        if not self.config.audio.prosody:
            return features
        row = prosody_row(waveform.float().cpu(), num_frames, self.config.audio.sample_rate,
                          self.config.audio.hidden_size)  # weightless, on the host
        return torch.cat([features, row.to(features.device, features.dtype)], dim=2)

    def project_audio(self, features: torch.Tensor) -> torch.Tensor:
        return self.run("audio_projector", audio_features=features)[0]

    def encode_speed(self, speed: torch.Tensor) -> torch.Tensor:
        return self.run("speed_encoder", head_speed=speed)[0]

    def locate_face(self, mask: torch.Tensor) -> torch.Tensor:
        return self._per_item("face_locator", "face_mask", mask)[0]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._chunked("vae_encoder", "images", images)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self._chunked("vae_decoder", "latents", latents)

    def reference_features(self, latents: torch.Tensor) -> list[torch.Tensor]:
        return list(self._per_item("reference", "reference_latents", latents))

    def motion_features(self, latents: torch.Tensor) -> list[torch.Tensor]:
        return list(self._per_item("motion", "motion_latents", latents))

    def denoise(self, noisy_latents, timestep, reference_features, motion_features, audio_tokens,
                speed_tokens, face_latents, anchor_latents=None) -> torch.Tensor:
        inputs = {"noisy_latents": noisy_latents, "timestep": timestep.reshape(-1).expand(noisy_latents.shape[0]),
                  "audio_tokens": audio_tokens, "speed_tokens": speed_tokens, "face_latents": face_latents}
        if anchor_latents is not None:
            inputs["anchor_latents"] = anchor_latents
        inputs.update({f"reference_feature_{i}": x for i, x in enumerate(reference_features)})
        inputs.update({f"motion_feature_{j}": x for j, x in enumerate(motion_features)})
        expected = {info.name for info in self.records["step"].inputs}
        if set(inputs) != expected:
            raise ValueError(f"step engine: got inputs {sorted(set(inputs) - expected)} it does not take, "
                             f"missing {sorted(expected - set(inputs))}")
        return self.run("step", **inputs)[0]

"""int8 engines for onnxruntime on CPU: static quantisation (QDQ, weights per output channel) of
the sub-networks where it pays, calibrated on the model's own latents of synthetic portraits.

Measured on the shipped tiny model (AVX-512 VNNI, one thread): the VAE decoder runs 2.4-2.8x
faster in int8 with a relative RMS error of 2% of its output; the step network runs slower (its
time is in small attention matmuls, where quantising and dequantising cost more than they save)
and moves 10% of its output, so it stays fp32. Every other engine of an int8 set is fp32.

Calibration portraits come from the synthetic face generator the default model was trained on
(no data set is needed): faces of several identities, poses and mouth openings, cropped around the
face as a render crops its reference, encoded by the model's own encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

QUANTIZED = ("vae_decoder",)  # engines that are int8 in an int8 set; the others are fp32
CALIBRATION_FACES = 32


def calibration_latents(model, count: int = CALIBRATION_FACES, seed: int = 0) -> torch.Tensor:
    """(count, C, h, w) scaled latents of synthetic portraits at the model's resolution."""
    from emo_rt.io.image import FaceBox, prepare_reference
    from emo_rt.models.vae import encode_scaled
    from emo_rt.training.data.synth.face import Expression, FaceRenderer, Pose
    from emo_rt.training.data.synth.identity import Identity

    rng = np.random.default_rng(seed)
    resolution = model.config.resolution
    pixels = []
    for k in range(count):
        if k % 4 == 0:  # four frames per identity
            renderer = FaceRenderer(Identity.sample(rng, f"calibration{k // 4}"), 2 * resolution)
        pose = Pose(yaw=float(rng.uniform(-20, 20)), pitch=float(rng.uniform(-10, 10)), roll=float(rng.uniform(-8, 8)))
        expression = Expression(mouth_open=float(rng.uniform(0, 1)), brow_raise=float(rng.uniform(0, 1)),
                                blink=float(rng.choice([0.0, 1.0], p=[0.85, 0.15])))
        frame, (x, y, w, h) = renderer.render(pose, expression)
        face = FaceBox(int(round(x)), int(round(y)), int(round(w)), int(round(h)))
        pixels.append(prepare_reference(frame, resolution, face_box=face).pixels)
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, R, R)
    with torch.no_grad():
        return encode_scaled(model.vae.float(), images)


def calibration_feeds(name: str, model) -> list[dict[str, np.ndarray]]:
    """Inputs of engine `name` to calibrate its activation ranges on, one dict per run."""
    if name == "vae_decoder":
        latents = calibration_latents(model).numpy()
        return [{"latents": latents[i:i + 8]} for i in range(0, len(latents), 8)]
    raise ValueError(f"no int8 calibration for engine {name!r}: quantised engines are {', '.join(QUANTIZED)}")


def quantize_int8(fp32_path: Path, int8_path: Path, name: str, model) -> None:
    """Quantise the fp32 ONNX at `fp32_path` into `int8_path` (QDQ: QuantizeLinear / DequantizeLinear
    around Conv, MatMul and Gemm; unsigned 8-bit activations, signed 8-bit weights per channel, the
    pairing x86's VNNI instructions run)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]):
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="emo-rt-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"  # shapes inferred and the graph optimised, as quantisation expects
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8_path), Feeds(calibration_feeds(name, model)),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "MatMul", "Gemm"])

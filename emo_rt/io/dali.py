"""Input pipelines on NVIDIA DALI (audio decode/resample, reference decode/resize/normalise).

CPU pipelines (`device_id=None`) without CUDA, mixed/GPU ones with it. When DALI is not
importable the same calls run on soundfile/PyAV/Pillow; `InputPipelines.backend` says which.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import numpy as np
import torch

from emo_rt.errors import InputError
from emo_rt.io import audio as audio_io
from emo_rt.io.files import check_input_file
from emo_rt.io.image import FaceBox, load_image, resize_image

logger = logging.getLogger(__name__)

Backend = Literal["dali", "fallback"]
Device = Literal["cpu", "cuda"]

# Containers DALI's audio decoder (libsndfile inside DALI) reads; others (mp3, m4a/aac) are
# decoded by PyAV on the host and only resampled by DALI.
DALI_AUDIO_CONTAINERS = ("wav", "flac", "ogg")


def import_dali() -> Any | None:
    """The `nvidia.dali` module, or None when it is not installed."""
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return dali


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 255] (uint8 or float) -> (3, H, W) float32 in [-1, 1] (the VAE input range)."""
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W), a fresh copy
    return torch.from_numpy(chw).div_(127.5).sub_(1.0)


class InputPipelines:
    """Loads the audio and the reference image as torch tensors, on DALI when it is available.

    backend: "auto" (DALI if importable), "dali" (error if not), or "fallback".
    device: "cpu" or "cuda" (DALI only; mixed image decoding and GPU resampling); default: cuda
    when DALI is used and torch sees a GPU.
    """

    def __init__(
        self,
        backend: Literal["auto", "dali", "fallback"] = "auto",
        device: Device | None = None,
        num_threads: int = 2,
    ) -> None:
        dali = import_dali() if backend in ("auto", "dali") else None
        if backend == "dali" and dali is None:
            raise RuntimeError("backend='dali' but nvidia-dali is not installed (pip install emo-rt[gpu])")
        self.backend: Backend = "dali" if dali is not None else "fallback"
        if device is None:
            device = "cuda" if self.backend == "dali" and torch.cuda.is_available() else "cpu"
        if device == "cuda" and self.backend != "dali":
            raise RuntimeError("device='cuda' needs the DALI backend; the fallback decodes on the CPU")
        self.device: Device = device
        self.num_threads = num_threads
        self._pipes: dict[str, Any] = {}  # built lazily, rebuilt after a failed run
        self.last_audio_decoder: Literal["dali", "soundfile", "pyav"] | None = None
        logger.info("input pipelines: %s on %s", self.backend, self.device)

    def __repr__(self) -> str:
        return f"InputPipelines(backend={self.backend!r}, device={self.device!r})"

    # --- audio ----------------------------------------------------------------------------------

    def load_audio(
        self, path: str | os.PathLike[str], sample_rate: int = 16000, *, min_seconds: float = 0.0
    ) -> torch.Tensor:
        """Mono float32 (T,) at `sample_rate`; same checks and errors as `emo_rt.io.audio.load_audio`."""
        path = check_input_file(path, "audio")
        if self.backend == "fallback":
            container = audio_io.sniff_container(path)
            self.last_audio_decoder = "soundfile" if container in audio_io.LIBSNDFILE_CONTAINERS else "pyav"
            return torch.from_numpy(audio_io.load_audio(path, sample_rate, min_seconds=min_seconds))

        if audio_io.sniff_container(path) in DALI_AUDIO_CONTAINERS:
            encoded = np.fromfile(path, dtype=np.uint8)  # (bytes,)
            samples, _native_rate = self._run("audio_decode", path, encoded=encoded, out_rate=sample_rate)
            self.last_audio_decoder = "dali"
        else:
            pcm, native_rate = audio_io.decode_audio(path)  # (T,) float32 at the file's rate
            (samples,) = self._run("audio_resample", path, pcm=pcm, in_rate=native_rate, out_rate=sample_rate)
            self.last_audio_decoder = "pyav"
        audio_io.check_duration(samples.shape[0], sample_rate, min_seconds, path)
        return samples

    # --- reference image ------------------------------------------------------------------------

    def load_reference(
        self, path: str | os.PathLike[str], resolution: int | tuple[int, int], crop_box: FaceBox | None = None
    ) -> torch.Tensor:
        """Decode, resize the `crop_box` region (whole image if None) to `resolution`, normalise.

        Returns (3, H, W) float32 in [-1, 1]. The crop box comes from `prepare_reference`
        (face-centred square), so both backends see the same pixels.
        """
        out_h, out_w = (resolution, resolution) if isinstance(resolution, int) else resolution
        image = load_image(path)  # validates the file; the fallback and the crop box need it
        height, width = image.shape[:2]
        box = crop_box if crop_box is not None else FaceBox(0, 0, width, height)
        if box.clipped(width, height) != box or box.w == 0 or box.h == 0:
            raise InputError(f"crop box {box} is not inside the {width}x{height} image {path}")
        if self.backend == "fallback":
            return pixels_to_tensor(resize_image(image, (out_h, out_w), box=box, exact=True))
        encoded = np.fromfile(path, dtype=np.uint8)
        roi = np.array([box.y, box.x, box.y + box.h, box.x + box.w], np.float32)  # (y0, x0, y1, x1)
        (pixels,) = self._run("image", path, encoded=encoded, roi=roi, size=(out_h, out_w))
        return pixels

    # --- DALI plumbing --------------------------------------------------------------------------

    def _run(self, kind: str, path: object, **inputs: Any) -> list[Any]:
        """Run one sample through the pipeline `kind`; returns its outputs as torch tensors."""
        key = f"{kind}:{inputs.get('out_rate', '')}:{inputs.get('size', '')}"
        if key not in self._pipes:
            self._pipes[key] = self._build(kind, **inputs)
        pipe = self._pipes[key]
        for name in ("encoded", "pcm", "roi"):
            if name in inputs:
                pipe.feed_input(name, [inputs[name]])
        if "in_rate" in inputs:
            pipe.feed_input("in_rate", [np.array(inputs["in_rate"], np.float32)])
        try:
            outputs = pipe.run()
        except RuntimeError as e:  # DALI raises RuntimeError for undecodable data; the pipe is dead
            del self._pipes[key]
            raise InputError(f"cannot decode {path} with DALI: {_dali_reason(e)}") from e
        return [self._to_torch(out) for out in outputs]

    def _build(self, kind: str, **inputs: Any) -> Any:
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device == "cuda"
        device_id = torch.cuda.current_device() if gpu else None

        @pipeline_def(
            batch_size=1, num_threads=self.num_threads, device_id=device_id,
            # one sample in, its result out: synchronous, no prefetch (a queue would return stale outputs)
            exec_async=False, exec_pipelined=False, prefetch_queue_depth=1,
        )
        def audio_decode() -> tuple[Any, Any]:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            pcm, native_rate = fn.decoders.audio(encoded, downmix=True, dtype=types.FLOAT)  # (T,) mono
            if gpu:
                pcm = pcm.gpu()
            samples = fn.audio_resample(pcm, in_rate=native_rate, out_rate=float(inputs["out_rate"]))
            return samples, native_rate

        @pipeline_def(
            batch_size=1, num_threads=self.num_threads, device_id=device_id,
            exec_async=False, exec_pipelined=False, prefetch_queue_depth=1,
        )
        def audio_resample() -> Any:
            pcm = fn.external_source(name="pcm", dtype=types.FLOAT, ndim=1, device="gpu" if gpu else "cpu")
            in_rate = fn.external_source(name="in_rate", dtype=types.FLOAT, ndim=0)
            return fn.audio_resample(pcm, in_rate=in_rate, out_rate=float(inputs["out_rate"]))

        @pipeline_def(
            batch_size=1, num_threads=self.num_threads, device_id=device_id,
            exec_async=False, exec_pipelined=False, prefetch_queue_depth=1,
        )
        def image() -> Any:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            roi = fn.external_source(name="roi", dtype=types.FLOAT, ndim=1)  # (y0, x0, y1, x1)
            # jpeg_fancy_upsampling: chroma upsampled like libjpeg-turbo (and so Pillow) does it
            pixels = fn.decoders.image(
                encoded, device="mixed" if gpu else "cpu", output_type=types.RGB, jpeg_fancy_upsampling=True
            )  # (H, W, 3) uint8, EXIF orientation applied
            pixels = fn.resize(
                pixels, size=list(inputs["size"]), roi_start=roi[0:2], roi_end=roi[2:4], roi_relative=False,
                interp_type=types.INTERP_LINEAR, antialias=True, dtype=types.FLOAT,
            )  # (h, w, 3) float32 in [0, 255]
            return fn.crop_mirror_normalize(
                pixels, mean=[127.5] * 3, std=[127.5] * 3, output_layout="CHW", dtype=types.FLOAT
            )  # (3, h, w) in [-1, 1]

        pipe = {"audio_decode": audio_decode, "audio_resample": audio_resample, "image": image}[kind]()
        pipe.build()
        return pipe

    def _to_torch(self, tensor_list: Any) -> torch.Tensor:
        """First sample of a DALI TensorList as a torch tensor on this pipeline's device."""
        from nvidia.dali.backend import TensorListGPU

        if isinstance(tensor_list, TensorListGPU):
            from nvidia.dali.plugin.pytorch import feed_ndarray

            sample = tensor_list[0]
            out = torch.empty(sample.shape(), dtype=torch.float32, device="cuda")
            feed_ndarray(sample, out, cuda_stream=torch.cuda.current_stream())
            return out
        return torch.from_numpy(np.array(tensor_list[0]))  # copy: DALI reuses its buffers


def _dali_reason(error: RuntimeError) -> str:
    """The operator's own message from a DALI pipeline error (the line after "encountered:")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "encountered:" in lines:
        after = lines[lines.index("encountered:") + 1 :]
        if after:
            return after[0]
    return lines[0] if lines else type(error).__name__

"""Input pipelines on NVIDIA DALI (audio decode, reference decode/resize/normalise).

CPU pipelines (`device_id=None`) without CUDA, mixed/GPU ones with it. When DALI is not
importable, or $EMO_RT_NO_DALI is set, the same calls run on soundfile/PyAV/Pillow;
`InputPipelines.backend` says which. `emo_rt.pipeline.load_inputs` reads every render's files
through `decode_audio`, `resample` and `reference_pixels`: the fallback's very audio samples (DALI
decodes wav/flac bit-exactly; resampling stays the polyphase filter, see `resample`) and decoded
pixels (files DALI would read otherwise go to the fallback), the resized reference within one level
of Pillow's (tests/io/test_io_dali.py, tests/pipeline/test_load_inputs_dali.py).
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

NO_DALI_ENV = "EMO_RT_NO_DALI"  # set (to anything but "" or "0"): the fallback, even with DALI installed

# Containers DALI's audio decoder (libsndfile inside DALI) decodes bit-exactly as soundfile does
# (measured: 8/16/24/32-bit and float wav, 16/24-bit flac). It reads ogg/vorbis too, but up to 2.4e-7
# away (another libvorbis), so ogg, like mp3 and m4a/aac, is decoded by the fallback (soundfile/PyAV):
# the audio track a video carries is the file's own samples either way.
DALI_EXACT_AUDIO_CONTAINERS = ("wav", "flac")
# Images DALI decodes to the very pixels `load_image` (Pillow) gives, EXIF rotation included
# (measured: RGB in each format below; 1, L, LA, P, RGBA png; L jpg; RGBA webp). Pillow reads 16-bit
# images by clipping to 255 where DALI scales them; DALI cannot read GIF, nor webp with EXIF (its
# decoder refuses it: `reference_pixels` then resizes with Pillow).
DALI_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
DALI_IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


class DaliDecodeError(InputError):
    """A file DALI's decoder refused (the fallback decoder may still read it)."""


def backend_choice() -> Literal["auto", "fallback"]:
    """"fallback" when $EMO_RT_NO_DALI is set to anything but "" or "0", else "auto" (DALI if importable)."""
    return "fallback" if os.environ.get(NO_DALI_ENV, "") not in ("", "0") else "auto"


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


def tensor_to_pixels(normalised: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8, each value rounded once to the nearest level."""
    levels = normalised.detach().float().cpu().add(1.0).mul_(127.5).round_().clamp_(0, 255)  # (3, H, W)
    return np.ascontiguousarray(levels.to(torch.uint8).permute(1, 2, 0).numpy())  # (H, W, 3), writable


def dali_reads_like_pillow(path: str | os.PathLike[str]) -> bool:
    """Whether DALI decodes this image to `load_image`'s pixels (its format and mode, from the header)."""
    from PIL import Image

    with Image.open(path) as image:  # lazy: reads the header only
        return image.format in DALI_IMAGE_FORMATS and image.mode in DALI_IMAGE_MODES


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
        """Mono float32 (T,) at `sample_rate`, on this pipeline's device; same checks and errors as
        `emo_rt.io.audio.load_audio` (`decode_audio`, then `resample`)."""
        native, native_rate = self.decode_audio(path)  # (T', C)
        audio_io.check_duration(native.shape[0], native_rate, min_seconds, path)
        if not np.isfinite(native).all():
            raise InputError(f"audio file contains NaN or infinite samples: {path}")
        mono = native.mean(axis=1, dtype=np.float32)  # (T',)
        return torch.from_numpy(self.resample(mono, native_rate, sample_rate)).to(self.device)

    def decode_audio(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
        """(T, C) float32 at the file's own rate and channels, and that rate: the very samples of
        `emo_rt.io.audio.decode_audio(path, channels=True)`, with its checks and error messages.

        DALI decodes wav and flac (bit-exact with soundfile); other containers, and files DALI cannot
        decode, go to the fallback decoder, which decodes them or raises its own InputError.
        """
        path = check_input_file(path, "audio")
        container = audio_io.sniff_container(path)
        if self.backend == "dali" and container in DALI_EXACT_AUDIO_CONTAINERS:
            try:
                encoded = np.fromfile(path, dtype=np.uint8)  # (bytes,)
                samples, native_rate = self._run("audio_native", path, encoded=encoded)  # (T, C), ()
            except DaliDecodeError as e:
                logger.info("%s; decoding it with the fallback", e)
            else:
                if samples.shape[0] > 0:  # an empty file: the fallback's message
                    self.last_audio_decoder = "dali"
                    return samples.numpy(), int(native_rate)
        self.last_audio_decoder = "soundfile" if container in audio_io.LIBSNDFILE_CONTAINERS else "pyav"
        return audio_io.decode_audio(path, channels=True)

    def resample(self, samples: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
        """(T,) float32 at `rate` -> (ceil(T * out_rate / rate),) float32 at `out_rate`, on the host.

        The fallback's polyphase filter on both backends. DALI's `fn.audio_resample` (a Hann-windowed
        sinc cut at the input's Nyquist frequency) does not low-pass when downsampling: a 12 kHz tone
        in 44.1 kHz audio comes out of it at full amplitude, aliased to 4 kHz, where the polyphase
        filter leaves 0.03 % of it. Upsampling with it would be accurate, but would part the model's
        waveform from the streamed one (`emo_rt.io.audio_stream.StreamResampler`) and from training's
        preprocessing, which are both this polyphase filter.
        """
        return audio_io.resample(samples, rate, out_rate)

    # --- reference image ------------------------------------------------------------------------

    def load_reference(
        self, path: str | os.PathLike[str], resolution: int | tuple[int, int], crop_box: FaceBox | None = None,
        image: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Decode, resize the `crop_box` region (whole image if None) to `resolution`, normalise.

        Returns (3, H, W) float32 in [-1, 1]. The crop box comes from `prepare_reference`
        (face-centred square), so both backends see the same pixels. `image`: the file as
        `load_image` read it, when the caller has it (saves decoding it again).
        """
        out_h, out_w = (resolution, resolution) if isinstance(resolution, int) else resolution
        if image is None:
            image = load_image(path)  # validates the file; the fallback and the crop box need it
        height, width = image.shape[:2]
        box = crop_box if crop_box is not None else FaceBox(0, 0, width, height)
        if box.clipped(width, height) != box or box.w == 0 or box.h == 0:
            raise InputError(f"crop box {box} is not inside the {width}x{height} image {path}")
        if self.backend == "fallback" or not dali_reads_like_pillow(path):
            return pixels_to_tensor(resize_image(image, (out_h, out_w), box=box, exact=True))
        encoded = np.fromfile(path, dtype=np.uint8)
        roi = np.array([box.y, box.x, box.y + box.h, box.x + box.w], np.float32)  # (y0, x0, y1, x1)
        (pixels,) = self._run("image", path, encoded=encoded, roi=roi, size=(out_h, out_w))
        return pixels

    def reference_pixels(
        self, path: str | os.PathLike[str], image: np.ndarray, resolution: int, crop_box: FaceBox
    ) -> np.ndarray:
        """(R, R, 3) uint8: the `crop_box` region of `image` (the file at `path`, as `load_image` read
        it) resized to `resolution`, as `prepare_reference` makes it.

        The fallback is `resize_image` (Pillow rounds to uint8 after each of its two passes); DALI
        resizes in float and rounds once, so a value may be one level away from Pillow's. Images DALI
        would decode to other pixels, or cannot decode, are resized by the fallback.
        """
        if self.backend == "dali" and dali_reads_like_pillow(path):
            try:
                normalised = self.load_reference(path, resolution, crop_box, image=image)  # (3, R, R) in [-1, 1]
            except DaliDecodeError as e:
                logger.info("%s; resizing it with the fallback", e)
            else:
                return tensor_to_pixels(normalised)
        return resize_image(image, resolution, box=crop_box)

    # --- DALI plumbing --------------------------------------------------------------------------

    def _run(self, kind: str, path: object, **inputs: Any) -> list[Any]:
        """Run one sample through the pipeline `kind`; returns its outputs as torch tensors."""
        key = f"{kind}:{inputs.get('size', '')}"
        if key not in self._pipes:
            self._pipes[key] = self._build(kind, **inputs)
        pipe = self._pipes[key]
        for name in ("encoded", "roi"):
            if name in inputs:
                pipe.feed_input(name, [inputs[name]])
        try:
            outputs = pipe.run()
        except RuntimeError as e:  # DALI raises RuntimeError for undecodable data; the pipe is dead
            del self._pipes[key]
            raise DaliDecodeError(f"cannot decode {path} with DALI: {_dali_reason(e)}") from e
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
        def audio_native() -> tuple[Any, Any]:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            pcm, native_rate = fn.decoders.audio(encoded, downmix=False, dtype=types.FLOAT)  # (T, C), on the host
            return pcm, native_rate

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

        pipe = {"audio_native": audio_native, "image": image}[kind]()
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

"""The five training stages: which parameters each trains, how it starts, what it draws, its loss.

- stage 0 (tiny only) `VAEStage`: the AutoencoderKL on corpus frames; L1 reconstruction (face and
  mouth weighted) + KL; at the end the VAE's scaling_factor is set to 1 / std of its latents.
- stage 1 `FrameStage`: (reference, target) frame pairs, f=1, no motion frames. Trains the
  Backbone's 2D layers, the ReferenceNet and the FaceLocator. Temporal modules are inert (proj_out
  zero, not trained); audio and speed tokens are zeros into zero-initialised branches.
- stage 2 `ClipStage(speed=False)`: n motion + f frames with audio. Trains the temporal modules
  (without their speed attention) and the audio layers (audio_attn, norm_audio, audio_projector).
- stage 3 `ClipStage(speed=True)`: trains the temporal modules and the speed layers (speed_attn,
  norm_speed, speed_encoder); the audio layers stay as stage 2 left them.
- stage 4 `DistillStage` (distill.py): the whole Backbone learns to render in few single-pass steps
  what the guided stage-3 teacher renders in many.

The VAE and the wav2vec2 audio encoder are frozen from stage 1 on: their outputs come from caches.
Each stage is an nn.Module whose forward(batch) returns the loss, so DDP wraps one module per stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from emo_rt.models import EmoModel
from emo_rt.models.conditioning import from_diffused, to_diffused
from emo_rt.models.vae import encode_unscaled
from emo_rt.training.recipe import (
    DenoiseStageRecipe,
    LossRecipe,
    Recipe,
    VAEStageRecipe,
)

# ---- which parameters a stage trains, by name in EmoModel.named_parameters() ------------------
_AUDIO = {"audio_attn", "norm_audio"}
_SPEED = {"speed_attn", "norm_speed"}


def _parts(name: str) -> set[str]:
    return set(name.split("."))


def trains_in_stage(stage: int, name: str) -> bool:
    parts = _parts(name)
    part = name.split(".", 1)[0]
    if stage == 0:
        return part == "vae"
    if stage == 1:
        if part in ("reference_net", "face_locator"):
            return True
        return part == "backbone" and not parts & ({"motion_modules"} | _AUDIO)
    temporal = part == "backbone" and "motion_modules" in parts
    if stage == 2:
        return part == "audio_projector" or (part == "backbone" and bool(parts & _AUDIO)) or (
            temporal and not parts & _SPEED)
    if stage == 3:
        return part == "speed_encoder" or temporal
    if stage == 4:  # distillation: the whole Backbone, its conditioning inputs frozen
        return part == "backbone"
    raise ValueError(f"no stage {stage}")


def stage_parameter_names(model: EmoModel, stage: int) -> list[str]:
    """The parameters stage `stage` is meant to train (all others stay bitwise unchanged)."""
    return [name for name, _ in model.named_parameters() if trains_in_stage(stage, name)]


# ---- model preparation when a stage starts from the previous stage's output --------------------
def make_inert_temporal(model: EmoModel) -> list[str]:
    """Zero every temporal module's proj_out: the module then returns its input (stage 1)."""
    names = []
    for name, module in model.backbone.named_modules():
        if name.endswith("proj_out") and ".motion_modules." in f".{name}":
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
            names.append(name)
    return names


def scheduler_from(recipe: Recipe) -> DDPMScheduler:
    d = recipe.diffusion
    return DDPMScheduler(num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule,
                         beta_start=d.beta_start, beta_end=d.beta_end, prediction_type=d.prediction_type,
                         clip_sample=False)


# ---- loss weighting -------------------------------------------------------------------------------
def loss_weight_map(face_mask: torch.Tensor, size: int, loss: LossRecipe) -> torch.Tensor:
    """face_mask (B, 1, R, R) -> (B, 1, size, size): 1 + face_weight * face + mouth_weight * lower
    half + brow_weight * upper half of the face box, averaged over each output cell."""
    rows = face_mask.amax(dim=-1)  # (B, 1, R): rows that hold face
    r = face_mask.shape[-2]
    index = torch.arange(r, device=face_mask.device, dtype=face_mask.dtype)
    top = torch.where(rows > 0, index, torch.full_like(index, r)).amin(-1)  # (B, 1)
    bottom = torch.where(rows > 0, index, torch.full_like(index, -1)).amax(-1)
    middle = (top + bottom + 1) / 2
    lower = face_mask * (index[:, None] >= middle[..., None, None])  # (B, 1, R, R)
    upper = face_mask - lower
    weight = 1 + loss.face_weight * face_mask + loss.mouth_weight * lower + loss.brow_weight * upper
    return F.adaptive_avg_pool2d(weight, size) if size != r else weight


def weighted_mean(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """error (B, ...), weight broadcastable -> scalar: per-sample weighted means, averaged over B,
    so that DDP's gradient average over equal per-rank batches equals the whole batch's."""
    weight = weight.expand_as(error)
    per_sample = (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1)
    return per_sample.mean()


# ---- stages ------------------------------------------------------------------------------------
class Stage(nn.Module):
    """One stage over an EmoModel: forward(batch) -> (loss, stats)."""

    number: int

    def __init__(self, model: EmoModel, recipe: Recipe):
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.stage_recipe = recipe.stage(self.number)
        self.loss_recipe = recipe.loss
        self.autocast_dtype = torch.bfloat16 if self.stage_recipe.precision == "bf16" else None

    def parameter_names(self) -> list[str]:
        return stage_parameter_names(self.model, self.number)

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def draw(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random inputs of one sample (noise, timestep, dropout flags), from its own generator."""
        raise NotImplementedError

    def sample(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images for the contact sheet: (rows, columns, 3, H, W) in [-1, 1]."""
        raise NotImplementedError


class VAEStage(Stage):
    number = 0

    def __init__(self, model: EmoModel, recipe: Recipe, crop: int):
        super().__init__(model, recipe)
        self.crop = crop
        self.stage_recipe: VAEStageRecipe
        c = model.config
        side = crop // c.vae.downsample_factor
        self.latent_shape = (c.vae.latent_channels, side, side)

    def draw(self, generator):
        corner = torch.randint(0, self.model.config.resolution - self.crop + 1, (2,), generator=generator)
        return {"crop_corner": corner, "posterior_noise": torch.randn(self.latent_shape, generator=generator)}

    def _crops(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's crop of `target` (B, 3, c, c) and of `face_mask` (B, 1, c, c)."""
        c = self.crop
        images, masks = [], []
        for image, mask, (y, x) in zip(batch["target"], batch["face_mask"], batch["crop_corner"].tolist()):
            images.append(image[:, y:y + c, x:x + c])
            masks.append(mask[:, y:y + c, x:x + c])
        return torch.stack(images), torch.stack(masks)

    def forward(self, batch):
        images, mask = self._crops(batch)  # (B, 3, c, c), (B, 1, c, c)
        with self.autocast(images.device):
            z, kl = encode_unscaled(self.model.vae, images, batch["posterior_noise"])
            reconstruction = self.model.vae.decode(z).sample
        weight = loss_weight_map(mask, images.shape[-1], self.loss_recipe)
        rec = weighted_mean((reconstruction.float() - images).abs(), weight)
        # KL summed over latent elements per image pixel: LDM's kl_weight scale (1e-6); none for ShuffleAutoencoder
        kl = kl.float().mean() / images[0].numel() if kl is not None else rec.new_zeros(())
        loss = rec + self.stage_recipe.kl_weight * kl
        return loss, {"rec": rec.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def sample(self, batch):
        images = batch["target"]
        reconstruction = self.model.vae.decode(encode_unscaled(self.model.vae, images)[0]).sample
        return torch.stack([images, reconstruction.clamp(-1, 1)], dim=0)  # rows: input, reconstruction


class _DenoiseStage(Stage):
    """Shared by stages 1-3: noise, timesteps, conditioning dropout, the weighted noise loss."""

    num_frames: int
    num_motion_frames: int

    def __init__(self, model: EmoModel, recipe: Recipe):
        super().__init__(model, recipe)
        self.stage_recipe: DenoiseStageRecipe
        self.scheduler = scheduler_from(recipe)
        c = model.config
        self.latent_shape = (c.unet.in_channels, self.num_frames, c.latent_size, c.latent_size)

    def draw(self, generator):
        r = self.stage_recipe
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (), generator=generator)
        u = torch.rand(2, generator=generator)
        return {"noise": torch.randn(self.latent_shape, generator=generator), "timestep": t,
                "keep_reference": (u[0] >= r.reference_dropout).float(),
                "keep_audio": (u[1] >= r.audio_dropout).float()}

    # conditioning (B = batch): each returns what the Backbone takes
    def reference_features(self, batch, train: bool) -> list[torch.Tensor]:
        features = self.model.reference_net.reference_features(batch["reference_latents"])
        if not train:
            return features
        keep = batch["keep_reference"][:, None, None].to(features[0].dtype)
        return [f * keep for f in features]

    def zero_tokens(self, batch_size: int, tokens: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch_size, self.num_frames, tokens, dim)

    def conditions(self, batch, train: bool) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        raise NotImplementedError

    def clean_latents(self, batch) -> torch.Tensor:
        """(B, 4, f, h, w) the frames to denoise."""
        raise NotImplementedError

    def anchor(self, batch) -> torch.Tensor | None:
        """(B, C, h, w) the anchor: the reference's latents; None when the model takes none."""
        return None if self.model.config.anchor == "none" else batch["reference_latents"]

    def anchor_condition(self, batch) -> dict[str, torch.Tensor]:
        anchor = self.anchor(batch)
        return {} if anchor is None else {"anchor_latents": anchor}

    def diffused_latents(self, batch) -> torch.Tensor:
        """(B, C, f, h, w) what is noised and denoised: the clean frames, or minus the anchor."""
        return to_diffused(self.clean_latents(batch), self.anchor(batch), self.model.config.anchor)

    def forward(self, batch):
        latents = self.diffused_latents(batch)
        noise, t = batch["noise"], batch["timestep"]
        noisy = self.scheduler.add_noise(latents, noise, t)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "sample":  # the clean latents: nothing of the noise has to pass through the network
            target = latents
        else:
            target = self.scheduler.get_velocity(latents, noise, t)
        with self.autocast(latents.device):
            prediction = self.model.backbone(noisy, t, **self.conditions(batch, train=True))
        weight = loss_weight_map(batch["face_mask"], latents.shape[-1], self.loss_recipe)[:, :, None]
        loss = weighted_mean((prediction.float() - target).square(), weight)
        return loss, {}

    @torch.no_grad()
    def denoise(self, batch, steps: int, generator: torch.Generator) -> torch.Tensor:
        """DDIM from noise with the batch's conditions (no dropout) -> (B, C, f, h, w) frame latents."""
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        latents = self.clean_latents(batch)
        z = torch.randn(latents.shape, generator=generator).to(latents)
        conditions = self.conditions(batch, train=False)
        for t in scheduler.timesteps:
            with self.autocast(z.device):
                prediction = self.model.backbone(z, t.to(z.device), **conditions)
            z = scheduler.step(prediction.float(), t, z).prev_sample
        return from_diffused(z, self.anchor(batch), self.model.config.anchor)

    @torch.no_grad()
    def sample(self, batch):
        """f = 1: per sample one row [reference, true frame, generated frame]; f > 1: per sample two
        rows, [reference, true frames...] and [reference, generated frames...]."""
        generated = self.denoise(batch, self.stage_recipe.sample_steps, torch.Generator().manual_seed(0))
        truth = self.clean_latents(batch)
        b, c, f, h, w = truth.shape
        decode = lambda z: self.model.decode_latents(z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)).reshape(
            b, f, 3, *self._image_size())  # noqa: E731
        reference = self.model.decode_latents(batch["reference_latents"])[:, None]  # (B, 1, 3, H, W)
        if f == 1:
            return torch.cat([reference, decode(truth), decode(generated)], dim=1)  # (B, 3, 3, H, W)
        rows = []
        for frames in (decode(truth), decode(generated)):
            rows.append(torch.cat([reference, frames], dim=1))
        return torch.stack(rows, dim=1).flatten(0, 1)  # (2B, 1+f, 3, H, W)

    def _image_size(self) -> tuple[int, int]:
        r = self.model.config.resolution
        return r, r


class FrameStage(_DenoiseStage):
    number = 1
    num_frames = 1
    num_motion_frames = 0

    def __init__(self, model: EmoModel, recipe: Recipe):
        super().__init__(model, recipe)
        self._motion_channels = None

    def clean_latents(self, batch):
        return batch["target_latents"][:, :, None]  # (B, 4, 1, h, w)

    def empty_motion_features(self, like: torch.Tensor) -> list[torch.Tensor]:
        """Per temporal layer a (B, 0, C, h, w) tensor: no motion frames (the modules are inert)."""
        if self._motion_channels is None:
            with torch.no_grad():
                probe = self.model.reference_net.motion_features(like[:1, None])
            self._motion_channels = [tuple(p.shape[2:]) for p in probe]
        return [like.new_zeros(like.shape[0], 0, *shape) for shape in self._motion_channels]

    def conditions(self, batch, train):
        reference = batch["reference_latents"]
        b = reference.shape[0]
        c = self.model.config
        return {"reference_features": self.reference_features(batch, train),
                "motion_features": self.empty_motion_features(reference),
                "audio_tokens": self.zero_tokens(b, c.audio.num_tokens, c.audio.token_dim, reference),
                "speed_tokens": self.zero_tokens(b, c.speed.num_tokens, c.speed.token_dim, reference),
                "face_latents": self.model.face_locator(batch["face_mask"]), **self.anchor_condition(batch)}


class ClipStage(_DenoiseStage):
    """Stages 2 (speed=False) and 3 (speed=True) on ClipWindowDataset samples: `frame_latents`
    (B, n+f, 4, h, w) (motion latents already zero where `zero_motion`), `audio_features`
    (B, n+f+2M, L, D) and `head_speed` (B, n+f+2M) of frames start-M .. start+n+f+M-1, M =
    `self.context`. The frozen ReferenceNet and FaceLocator run without autograd."""

    def __init__(self, model: EmoModel, recipe: Recipe, speed: bool):
        self.number = 3 if speed else 2
        self.num_frames = model.config.num_frames
        self.num_motion_frames = model.config.num_motion_frames
        super().__init__(model, recipe)
        self.speed = speed
        self.context = max(model.config.audio.context_frames, model.config.speed.context_frames)

    def clean_latents(self, batch):
        return batch["frame_latents"][:, self.num_motion_frames:].transpose(1, 2)  # (B, 4, f, h, w)

    def _window(self, x: torch.Tensor, module: nn.Module, context: int) -> torch.Tensor:
        """Per-frame inputs of frames start-M .. -> tokens of the f window frames, each from frames
        t-context .. t+context (what the module sees at render time, edges replicated)."""
        f, first = self.num_frames, self.num_motion_frames + self.context - context
        return module(x[:, first:first + f + 2 * context])[:, context:context + f]

    def conditions(self, batch, train):
        c = self.model.config
        n = self.num_motion_frames
        with torch.no_grad():
            reference = self.reference_features(batch, train)
            motion_features = self.model.reference_net.motion_features(batch["frame_latents"][:, :n])
            face = self.model.face_locator(batch["face_mask"])
        audio = self._window(batch["audio_features"], self.model.audio_projector, c.audio.context_frames)
        if train:
            audio = audio * batch["keep_audio"][:, None, None, None].to(audio.dtype)
        b = audio.shape[0]
        if self.speed:
            speed = self._window(batch["head_speed"], self.model.speed_encoder, c.speed.context_frames)
        else:
            speed = self.zero_tokens(b, c.speed.num_tokens, c.speed.token_dim, audio)
        return {"reference_features": reference, "motion_features": motion_features, "audio_tokens": audio,
                "speed_tokens": speed, "face_latents": face, **self.anchor_condition(batch)}


def build_stage(number: int, model: EmoModel, recipe: Recipe, crop: int = 0, teacher: nn.Module | None = None) -> Stage:
    """Stage `number` over `model`; stage 4 also takes its frozen teacher Backbone."""
    if number == 0:
        return VAEStage(model, recipe, crop or model.config.resolution)
    if number == 1:
        return FrameStage(model, recipe)
    if number == 4:
        from emo_rt.training.distill import DistillStage

        return DistillStage(model, recipe, teacher)
    return ClipStage(model, recipe, speed=number == 3)

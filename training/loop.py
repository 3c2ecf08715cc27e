"""The training loop of one stage: model, caches and samples set up, steps, checkpoints, the output.

`Trainer(plan, dist).run()` trains the planned stage (training/plan.py) and returns its output model
directory. Every rank computes the same global batch's share (stage_data.SampleStream), so a resumed
run or any process count sees exactly the same samples.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader

from emo_rt.io.files import atomic_directory, write_json_atomic
from emo_rt.io.shards import ShardIndex
from emo_rt.models import EmoModel
from emo_rt.models.migration import set_scaling_factor
from emo_rt.models.vae import encode_unscaled
from emo_rt.pipeline import write_model_render_settings
from emo_rt.runtime.machine import machine
from emo_rt.runtime.progress import progress_bar
from emo_rt.training import checkpoint as ckpt
from emo_rt.training.data.workers import quiet_when_the_trainer_is_gone
from emo_rt.training.distributed import Distributed
from emo_rt.training.initial import initial_model
from emo_rt.training.logs import StepLog, contact_sheet, plot_losses
from emo_rt.training.optim import Optimisation
from emo_rt.training.plan import Plan, recipe_fingerprint
from emo_rt.training.recipe import TrainingError
from emo_rt.training.stage_data import (
    BatchKeys,
    KeyedSamples,
    SampleStream,
    ShardSource,
    audio_cache_dir,
    collate,
    is_complete,
    latent_cache_dir,
    stage_samples,
    write_caches,
)
from emo_rt.training.stages import Stage, build_stage
from emo_rt.training.trainable import apply_gradient_checkpointing, select_trainable


class Trainer:
    """One stage run. `on_backward(step, model)` (optional) is called after each backward, with the
    (DDP-averaged) gradients in place and before clipping: a hook for tests and diagnostics."""

    def __init__(self, plan: Plan, dist: Distributed, progress: bool = True, on_backward=None):
        self.plan, self.dist = plan, dist
        self.on_backward = on_backward
        self.model: EmoModel | None = None
        self.recipe = plan.recipe
        self.stage_recipe = plan.recipe.stage(plan.stage)
        self.console = Console(stderr=True, quiet=not dist.main)
        self.show_progress = progress and dist.main

    def run(self) -> Path:
        p, r, dist = self.plan, self.stage_recipe, self.dist
        dist.share_cores()
        resume_state = ckpt.load_state(p.checkpoint) if p.checkpoint is not None else None
        start = int(resume_state["step"]) if resume_state else 0
        model = (EmoModel.from_pretrained(p.checkpoint / "model") if p.checkpoint is not None
                 else initial_model(p, say=self.console.print)).to(dist.device)
        self.model = model
        teacher = EmoModel.from_pretrained(p.start_model).backbone.to(dist.device) if p.stage == 4 else None
        stage = build_stage(p.stage, model, self.recipe, crop=getattr(r, "crop", 0), teacher=teacher)
        samples, preview = self.samples(model, stage)
        if r.gradient_checkpointing:  # before naming parameters: the wrappers add a name component
            apply_gradient_checkpointing(model)
        stream = SampleStream(len(samples), self.recipe.seed, r.batch_size // dist.world_size, dist.world_size)
        probe = lambda: stage(self._to_device(collate([samples[k] for k in stream.keys(start, dist.rank)])))[0]  # noqa: E731
        names, params, frozen = select_trainable(model, set(stage.parameter_names()), probe)
        self.console.print(f"stage {p.stage}: training {sum(q.numel() for q in params):,} parameters in "
                           f"{len(params)} tensors" + (f" ({frozen} of the stage's tensors cannot reach the "
                                                       "loss and stay frozen)" if frozen else ""))
        optim = Optimisation(names, params, r)
        if resume_state:
            optim.load_state_dict(resume_state, dist.device)
            self.console.print(f"resuming stage {p.stage} from {p.checkpoint} (step {start})")
        loader = DataLoader(samples, batch_sampler=BatchKeys(stream, dist.rank, start, r.steps), collate_fn=collate,
                            num_workers=r.num_workers, persistent_workers=r.num_workers > 0,
                            worker_init_fn=quiet_when_the_trainer_is_gone)
        log = self._open_log(start if resume_state else None)
        started = time.perf_counter()
        step_times = self._steps(dist.wrap(stage), stage, loader, optim, log, start, preview)
        if dist.main:
            self._finish(model, stage, samples, optim, preview, time.perf_counter() - started, step_times)
        dist.barrier()
        if log is not None:
            log.close()
        return p.paths.model

    # ---- set-up ----------------------------------------------------------------------------------
    def samples(self, model: EmoModel, stage: Stage) -> tuple[KeyedSamples, dict]:
        """The stage's training samples over every --data folder (caches written first) and a fixed
        preview batch."""
        p = self.plan
        sources = []
        for data_dir in p.data_dirs:
            index = ShardIndex(data_dir)
            if index.resolution != model.config.resolution:
                raise TrainingError(f"{data_dir} holds {index.resolution}px frames, the model needs "
                                    f"{model.config.resolution}px: preprocess at --resolution {model.config.resolution}")
            source = ShardSource(index, latent_cache_dir(data_dir, model) if p.stage >= 1 else None,
                                 audio_cache_dir(data_dir, model) if p.stage >= 2 else None)
            self._write_caches(source)
            sources.append(source)
        context = getattr(stage, "context", 0)  # clip stages: the audio/speed context frames
        return stage_samples(sources, model, p.stage, self.recipe, stage.draw, context)

    def _write_caches(self, source: ShardSource) -> None:
        """Every rank encodes its share of the clips (rank r: clips r, r+W, ...); rank 0 marks the
        caches complete once all have finished."""
        dist, model, index, latents, audio = self.dist, self.model, source.index, source.latents, source.audio
        todo = [d for d in (latents, audio) if d is not None and not is_complete(d)]
        if not todo:
            return
        share = copy.copy(index)
        share.clips = index.clips[dist.rank::dist.world_size]
        frames = sum(c.num_frames for c in share.clips) * len(todo)
        with self._progress() as bar:
            task = bar.add_task("caches", total=frames, loss="", rate="")
            write_caches(share, model, latents, audio, dist.device, progress=lambda k: bar.advance(task, k),
                         mark_complete=False)
        dist.barrier()
        if dist.main:
            write_caches(index, model, latents, audio, dist.device)  # finds every clip done, marks complete
            self.console.print(f"caches written: {', '.join(str(d) for d in todo)}")
        dist.barrier()

    def _open_log(self, resume_step: int | None) -> StepLog | None:
        """log.csv (rank 0 only), cut back to `resume_step` on a resume; recipe.json beside it."""
        p = self.plan
        if not self.dist.main:
            return None
        p.paths.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(p.paths.root / "recipe.json", self.recipe.to_dict())
        extra = ["rec", "kl"] if p.stage == 0 else []
        return StepLog(p.paths.log, ["step", "loss", "lr", "grad_norm", "step_time_s", "samples_per_s"] + extra,
                       resume_step=resume_step)

    def _progress(self):
        return progress_bar("loss", "rate", enabled=self.show_progress, console=self.console)

    # ---- the steps -------------------------------------------------------------------------------
    def _steps(self, module: torch.nn.Module, stage: Stage, loader: DataLoader, optim: Optimisation,
               log: StepLog | None, start: int, preview: dict) -> list[float]:
        """Train steps start..steps-1; returns each step's wall time."""
        p, r, dist = self.plan, self.stage_recipe, self.dist
        step_times: list[float] = []
        with self._progress() as bar:
            task = bar.add_task(f"stage {p.stage}", total=r.steps, completed=start, loss="", rate="")
            t0 = time.perf_counter()
            for step, batch in enumerate(loader, start=start):
                loss, stats = module(self._to_device(batch))
                optim.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.on_backward is not None:
                    self.on_backward(step, self.model)
                grad_norm, lr = optim.step(step)
                mean_loss = float(dist.mean(loss.detach()))
                stats = {k: float(dist.mean(v)) for k, v in stats.items()}
                step_times.append(time.perf_counter() - t0)
                done = step + 1
                if log is not None:
                    log.append({"step": done, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm,
                                "step_time_s": round(step_times[-1], 4),
                                "samples_per_s": round(r.batch_size / step_times[-1], 3), **stats})
                if done % r.log_every == 0 or done == r.steps:
                    recent = step_times[-r.log_every:]
                    bar.update(task, completed=done, loss=f"loss {mean_loss:.4f}",
                               rate=f"{len(recent) / sum(recent):.2f} it/s")
                if done % r.checkpoint_every == 0 or done == r.steps:
                    self._checkpoint(done, stage, optim)
                if dist.main and r.sample_every and done % r.sample_every == 0 and done != r.steps:
                    self._preview(stage, preview, done)
                t0 = time.perf_counter()
        return step_times

    def _checkpoint(self, done: int, stage: Stage, optim: Optimisation) -> None:
        p, r = self.plan, self.stage_recipe
        if self.dist.main:
            if done != r.steps:  # _finish plots the last one
                plot_losses(p.paths.log, p.paths.loss_png, f"stage {p.stage}")
            state = {"step": done, **optim.state_dict(),
                     "data": {"seed": self.recipe.seed, "global_batch": r.batch_size,
                              "next_position": done * r.batch_size}}  # in SampleStream order
            ckpt.save_checkpoint(p.paths.checkpoints, done, self.model, state, r.keep_checkpoints,
                                 meta={"recipe": recipe_fingerprint(self.recipe, p.stage)},
                                 scheduler=getattr(stage, "scheduler", None))
        self.dist.barrier()

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}

    def _preview(self, stage: Stage, batch: dict, step: int) -> Path:
        images = stage.sample(self._to_device(batch))
        return contact_sheet(images, self.plan.paths.samples / f"{ckpt.checkpoint_name(step)}.png")

    # ---- the output ------------------------------------------------------------------------------
    def _finish(self, model: EmoModel, stage: Stage, samples: KeyedSamples, optim: Optimisation, preview: dict,
                seconds: float, step_times: list[float]) -> None:
        """Write the stage's output model directory (EMA weights when EMA is on), atomically."""
        p, r = self.plan, self.stage_recipe
        if optim.ema:
            optim.copy_ema_into(model)
        if p.stage == 0:
            std = self._latent_std(stage, samples)
            set_scaling_factor(model, 1.0 / std)
            self.console.print(f"VAE latent std {std:.4f}: scaling_factor = {1.0 / std:.5f}")
        self._preview(stage, preview, r.steps)
        timing = sorted(step_times)
        info = {"stage": p.stage, "steps": r.steps,
                "trained_parameters": [n.replace("_checkpoint_wrapped_module.", "") for n in optim.names],
                "recipe": self.recipe.to_dict(), "seconds_this_run": round(seconds, 1),
                "median_step_s": timing[len(timing) // 2] if timing else None,
                "global_batch": r.batch_size, "processes": self.dist.world_size, "precision": r.precision,
                "data": [str(d) for d in p.data_dirs], "machine": machine()}
        with atomic_directory(p.paths.model) as partial:
            model.save_pretrained(partial)
            if p.stage >= 1:
                stage.scheduler.save_pretrained(partial / "scheduler")
            if hasattr(stage, "render_settings"):  # a distilled model renders with its own few steps
                write_model_render_settings(partial, stage.render_settings())
            write_json_atomic(partial / "training.json", info)
        plot_losses(p.paths.log, p.paths.loss_png, f"stage {p.stage}")
        self.console.print(f"stage {p.stage} done: {p.paths.model}")

    @torch.no_grad()
    def _latent_std(self, stage: Stage, samples: KeyedSamples) -> float:
        """std of the VAE's latents (posterior mode) over `scaling_samples` whole train frames."""
        frames = KeyedSamples(samples.base, self.recipe.seed, 20, None)
        count = self.stage_recipe.scaling_samples
        latents = []
        for i in range(0, count, 32):
            images = torch.stack([frames[(k % len(frames), k)]["target"] for k in range(i, min(count, i + 32))])
            latents.append(encode_unscaled(stage.model.vae, images.to(self.dist.device))[0].float().flatten())
        return float(torch.cat(latents).std())

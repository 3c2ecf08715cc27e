"""Stage 4 continued from the shipped student with an adversarial term (ADD-style, in latent space):
distillation as stage 4 trains it, plus `weight` x the hinge generator loss of a small per-frame latent
discriminator that sees (clean latents, the reference's latents) and is trained alongside on the clip's
true latents (real) against the student's clean-latent predictions (fake). weight 0 is the control.

    python lab/adversarial/finetune.py WEIGHT STEPS OUT_MODEL_DIR      (env THREADS, default 2; DISC=frame, clip
                                                                      (3D, over each window) or both)
"""
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stage4"))
from continued import Continuation  # noqa: E402


class LatentDiscriminator(nn.Module):
    """(B, C, h, w) frame latents + (B, C, h, w) reference latents -> (B, 1, h/4, w/4) patch logits."""

    def __init__(self, channels: int = 16, width: int = 64):
        super().__init__()
        sn = spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(2 * channels, width, 3, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 1, 3, padding=1)))

    def forward(self, latents, reference):
        return self.net(torch.cat([latents, reference], 1))


class ClipDiscriminator(nn.Module):
    """(B, C, f, h, w) a window's latents + (B, C, h, w) the reference's -> (B, 1, f, h/4, w/4) logits:
    3D convolutions, so it sees how frames change (flicker) as well as what each frame looks like."""

    def __init__(self, channels: int = 16, width: int = 48):
        super().__init__()
        sn = spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv3d(2 * channels, width, 3, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv3d(width, 2 * width, (3, 4, 4), stride=(1, 2, 2), padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv3d(2 * width, 2 * width, (3, 4, 4), stride=(1, 2, 2), padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv3d(2 * width, 1, 3, padding=1)))

    def forward(self, latents, reference):
        return self.net(torch.cat([latents, reference[:, :, None].expand_as(latents)], 1))


def frames(z):  # (B, C, f, h, w) -> (B*f, C, h, w)
    b, c, f, h, w = z.shape
    return z.transpose(1, 2).reshape(b * f, c, h, w)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(0)
    WEIGHT, STEPS, OUT = float(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    run = Continuation()
    # env DISC: frame (per-frame discriminator), clip (3D, over the window) or both (the two losses summed)
    KINDS = {"frame": ["frame"], "clip": ["clip"], "both": ["frame", "clip"]}[os.environ.get("DISC", "frame")]
    channels, num_frames = run.student.config.vae.latent_channels, run.student.config.num_frames
    discs = {kind: (ClipDiscriminator if kind == "clip" else LatentDiscriminator)(channels) for kind in KINDS}
    opt_d = torch.optim.AdamW([p for d in discs.values() for p in d.parameters()], lr=2e-4, betas=(0.0, 0.99),
                              weight_decay=0.0)
    t0 = time.time()
    for step in range(STEPS):
        batch = run.batch(step)
        distill, fake_clip = run.distill(batch)
        real_clip, ref = run.stage.clean_latents(batch), batch["reference_latents"]
        seen = {"clip": (real_clip, fake_clip, ref),  # (real, fake, reference) as each discriminator takes them
                "frame": (frames(real_clip), frames(fake_clip), ref.repeat_interleave(num_frames, 0))}
        # discriminator step (hinge), on a detached fake
        d_loss = sum(F.relu(1 - discs[kind](seen[kind][0], seen[kind][2])).mean()
                     + F.relu(1 + discs[kind](seen[kind][1].detach(), seen[kind][2])).mean() for kind in KINDS)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # student step: distillation + the generators' hinge terms
        for d in discs.values():
            d.requires_grad_(False)
        adv = sum(-discs[kind](seen[kind][1], seen[kind][2]).mean() for kind in KINDS)
        for d in discs.values():
            d.requires_grad_(True)
        run.step(distill + WEIGHT * adv)
        if (step + 1) % 10 == 0:
            print(f"step {step + 1} distill {distill.item():.5f} adv {adv.item():.3f} d {d_loss.item():.3f} "
                  f"{(time.time() - t0) / (step + 1):.2f} s/step", flush=True)
    run.save(OUT, {"discriminators.pt": {kind: d.state_dict() for kind, d in discs.items()}})
    print("saved", OUT)

"""A brow reader in latent space: a small conv net from one frame's latents (C, 16, 16) to the sidecar's
brow_raise, trained on the train splits of corpus seeds 0 and 1 (cached latents of the v3 autoencoder),
scored on seed 0's test split as the eval scores (Pearson r per clip, mean over clips). It is not the eval's
evaluator (that reads pixels); it is meant as a training signal.

    python lab/brow_reader/reader.py OUT.pt [STEPS]
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emo_rt.eval.data import HeldOutData
from emo_rt.models import EmoModel
from emo_rt.training.stage_data import latent_cache_dir


def clips(corpus, split, model):
    data = HeldOutData(corpus / "shards", corpus / "synth")
    cache = latent_cache_dir(corpus / "shards", model)
    out = []
    for entry in data.entries(split):
        z = np.load(Path(cache) / f"{entry.id}.npy").astype(np.float32)  # (N, C, h, w)
        out.append((entry.id, z, data.truth(entry)[0]["brow_raise"].astype(np.float32)))
    return out


class BrowReader(nn.Module):
    def __init__(self, channels: int = 16, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),   # 8x8
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),   # 4x4
            nn.Flatten(), nn.Linear(width * 16, 1))

    def forward(self, z):  # (B, C, 16, 16) -> (B,)
        return self.net(z)[:, 0]


if __name__ == "__main__":
    torch.set_num_threads(2)
    torch.manual_seed(0)
    STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    model = EmoModel.from_pretrained(Path.home() / "emo-runs/v3/run/stage4/model")
    home = Path.home() / "emo-runs"
    train = clips(home / "corpus", "train", model) + clips(home / "corpus1", "train", model)
    test = clips(home / "corpus", "test", model)
    Z = torch.from_numpy(np.concatenate([z for _, z, _ in train]))
    Y = torch.from_numpy(np.concatenate([y for _, _, y in train]))
    mean, std = float(Y.mean()), float(Y.std())
    print(f"{len(train)} train clips, {len(Z)} frames; brow mean {mean:.3f} std {std:.3f}")
    reader = BrowReader(Z.shape[1])
    opt = torch.optim.AdamW(reader.parameters(), 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    g = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        i = torch.randint(0, len(Z), (128,), generator=g)
        loss = (reader(Z[i]) - (Y[i] - mean) / std).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            with torch.no_grad():
                rs = [np.corrcoef(reader(torch.from_numpy(z)).numpy(), y)[0, 1] for _, z, y in test]
            print(f"step {step + 1} loss {loss.item():.4f} test r per clip {np.mean(rs):.3f} "
                  f"(min {np.min(rs):.3f})", flush=True)
    torch.save({"state": reader.state_dict(), "mean": mean, "std": std}, sys.argv[1])

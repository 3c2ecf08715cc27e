"""What the latent channel count costs the tiny preset's denoising networks: only the layers that
touch the latents change (Backbone conv_in / conv_out, ReferenceNet conv_in, FaceLocator conv_out);
FLOPs per 16x16 latent frame (FlopCounterMode on those layers) and parameters, against the whole
Backbone step pass (0.408 GFLOP per frame per pass, benchmarks/RESULTS.md).

    python lab/ae_design/backbone_cost.py [--channels 4 8 12 16]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from emo_rt.config import tiny
from emo_rt.models.face_locator import FaceLocator
from emo_rt.models.unet import UNet

STEP_PASS_GFLOP = 0.408  # benchmarks/RESULTS.md: one Backbone pass per frame, 4 latent channels


def layer_flops(layer: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(x)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[4, 8, 12, 16])
    args = p.parse_args()
    base = None
    print("| latent channels | Backbone conv_in + conv_out MFLOP/frame/pass | + params | ReferenceNet conv_in MFLOP"
          " | FaceLocator conv_out MFLOP | step pass change |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in args.channels:
        config = tiny()
        config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, in_channels=c, out_channels=c))
        h = config.resolution // 8
        backbone = UNet(config, "backbone")
        ch0 = config.unet.block_out_channels[0]
        io = layer_flops(backbone.conv_in, torch.zeros(1, c, h, h)) + layer_flops(backbone.conv_out, torch.zeros(1, ch0, h, h))
        params = sum(p.numel() for p in (*backbone.conv_in.parameters(), *backbone.conv_out.parameters()))
        ref_in = layer_flops(torch.nn.Conv2d(c, ch0, 3, padding=1), torch.zeros(1, c, h, h))
        locator = FaceLocator(config.face_locator, c)
        loc = layer_flops(locator.conv_out, torch.zeros(1, locator.conv_out.in_channels, h, h))
        if base is None:
            base = (io, params)
        change = (io - base[0]) / 1e9 / STEP_PASS_GFLOP * 100
        print(f"| {c} | {io / 1e6:.2f} | {params - base[1]:+d} | {ref_in / 1e6:.2f} | {loc / 1e6:.2f} | {change:+.2f}% |")


if __name__ == "__main__":
    main()

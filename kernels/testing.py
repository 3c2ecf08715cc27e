"""Inputs and the error-vs-control check shared by tests/kernels and benchmarks/bench_kernels.py."""

from __future__ import annotations

import torch


def temporal_inputs(rows: int, frames: int, motion: int, channels: int, dtype: torch.dtype,
                    device: str | torch.device = "cpu", seed: int = 0) -> list[torch.Tensor]:
    """Arguments 1..8 of `temporal_attention`, laid out as the processor makes them when one
    matmul projects q|k|v: q, k_frames, v_frames are strided views of one (N, f, 3C) tensor;
    k_motion, v_motion views of one (N, n, 2C); fp32 position tables (f, C), (n+f, C) x2."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    qkv = randn(rows, frames, 3 * channels).to(dtype)
    kv = randn(rows, motion, 2 * channels).to(dtype)
    return [*qkv.split(channels, dim=-1), *kv.split(channels, dim=-1),
            randn(frames, channels), randn(motion + frames, channels), randn(motion + frames, channels)]


def reference_inputs(batch: int, frames: int, tokens: int, reference_tokens: int, channels: int,
                     dtype: torch.dtype, device: str | torch.device = "cpu", seed: int = 0
                     ) -> list[torch.Tensor | None]:
    """Arguments 1..5 of `reference_attention`: q, k_self, v_self strided views of one
    (B*f, L, 3C) tensor; k_ref, v_ref views of one (B, Lr, 2C), or None when Lr is 0."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch * frames, tokens, 3 * channels, generator=gen).to(device, dtype)
    if reference_tokens == 0:
        return [*qkv.split(channels, dim=-1), None, None]
    kv = torch.randn(batch, reference_tokens, 2 * channels, generator=gen).to(device, dtype)
    return [*qkv.split(channels, dim=-1), *kv.split(channels, dim=-1)]


def max_error(x: torch.Tensor, truth: torch.Tensor) -> float:
    return (x.double() - truth.double()).abs().max().item()


def check_against_control(result: torch.Tensor, control: torch.Tensor, truth: torch.Tensor) -> None:
    """flash-attention's tolerance: the result's max error vs an fp64 truth must be at most twice
    that of the control (the same maths in torch at the result's precision).

    fp32 only: plus a floor of 8 fp32 epsilons at the output's scale. Both errors are then a few
    ulps and come from summation order (blocked online softmax vs one softmax), so their ratio
    is noise; real bugs (a wrong mask, index or scale) give errors orders of magnitude larger.
    """
    floor = 0.0
    if result.dtype == torch.float32:
        floor = 8 * torch.finfo(torch.float32).eps * truth.abs().max().item()
    error, control_error = max_error(result, truth), max_error(control, truth)
    if not error <= 2 * control_error + floor:
        raise AssertionError(f"{result.dtype}: max error {error:.3e} vs fp64 exceeds 2 x control "
                             f"error {control_error:.3e} + floor {floor:.1e}")

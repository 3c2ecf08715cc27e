"""The attention kernels' tiles against GPU resources. The interpreter checks none, so the launchers
choose tiles by a resource model (kernels/_common.Tiles); here: every head size of the presets fits
its budgets in every dtype, the model rejects the tile that was used before for fp32 at head_dim
160, and on CUDA the compiled kernels stay within the device's shared memory without spilling."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from emo_rt.config import sd15, tiny  # noqa: E402
from emo_rt.kernels._common import REGISTER_BUDGET, SHARED_MEMORY_BUDGET  # noqa: E402
from emo_rt.kernels.reference_attention import reference_tile_estimate, reference_tiles  # noqa: E402
from emo_rt.kernels.temporal_attention import temporal_tiles  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SM90_MAX_SHARED_PER_BLOCK = 227 * 1024  # H100/H200 (CUDA C++ Programming Guide, compute capability 9.0)


def head_dims(config) -> set[int]:
    channels = config.unet.block_out_channels
    return ({c // config.unet.num_attention_heads for c in channels}
            | {c // config.temporal.num_attention_heads for c in channels})


PRESET_HEAD_DIMS = sorted(head_dims(sd15()) | head_dims(tiny()))


def test_the_presets_head_sizes_are_the_ones_the_kernel_tests_cover():
    assert {40, 80, 160} <= set(PRESET_HEAD_DIMS) <= {8, 16, 32, 40, 64, 80, 160}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", PRESET_HEAD_DIMS)
def test_reference_tiles_fit_the_budgets_on_a_gpu(head_dim, dtype):
    dot_fp32 = dtype == torch.float32  # the GPU policy: fp16/bf16 dots run in the input dtype
    for tokens in (4096, 1024, 256, 64, 21):  # sd15's levels at 512 px, and an unaligned small one
        tiles = reference_tiles(tokens, tokens, head_dim, dtype, dot_fp32=dot_fp32)
        assert tiles.fits(), tiles
        assert tiles.shared_bytes <= SHARED_MEMORY_BUDGET and tiles.registers <= REGISTER_BUDGET
        assert 16 <= tiles.block_m <= max(16, tokens * 2) and tiles.block_d >= head_dim


def test_the_former_fp32_tile_at_head_dim_160_does_not_fit_any_gpu():
    """32x32 queries/keys over a 256-wide head tile with Triton's default 3 stages: the key and
    value buffers alone take 192 KB; with the query and probability tiles it passes sm_90's 227 KB
    per block. The launcher now takes 16x16 with 2 stages there."""
    former = reference_tile_estimate(32, 32, 160, torch.float32, num_warps=4, num_stages=3, dot_fp32=True)
    assert former.shared_bytes > SM90_MAX_SHARED_PER_BLOCK and not former.fits()
    chosen = reference_tiles(4096, 4096, 160, torch.float32, dot_fp32=True)
    assert (chosen.block_m, chosen.block_n, chosen.num_stages) == (16, 16, 2)
    assert chosen.shared_bytes < former.shared_bytes / 2


def test_small_levels_get_small_tiles():
    tiles = reference_tiles(9, 70, 32, torch.float16, dot_fp32=False)
    assert (tiles.block_m, tiles.block_n) == (16, 64)  # queries: 9 -> 16; keys: max(9, 70) -> 128, capped


@pytest.mark.parametrize("head_dim", PRESET_HEAD_DIMS)
def test_temporal_tiles_fit_the_budgets(head_dim):
    for frames in (12, 8, 7):
        tiles = temporal_tiles(frames, head_dim)
        assert tiles.fits(), tiles
        assert tiles.num_stages == 1  # one or two key blocks: nothing to pipeline


# ---- on a GPU: what the compiler made of them ------------------------------------------------------

def _device_limits() -> tuple[int, str]:
    props = torch.cuda.get_device_properties(0)  # the opt-in maximum is what Triton checks against
    return int(getattr(props, "shared_memory_per_block_optin", props.shared_memory_per_block)), props.name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernel resources need a CUDA device "
                    "(the interpreter compiles nothing)")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [40, 80, 160])
def test_compiled_kernels_fit_the_device_without_spills(head_dim, dtype):
    from emo_rt.kernels.reference_attention import reference_attention_resources
    from emo_rt.kernels.temporal_attention import temporal_attention_resources
    from emo_rt.kernels.testing import reference_inputs, temporal_inputs

    max_shared, name = _device_limits()
    heads = 2
    reference = reference_attention_resources(*reference_inputs(1, 2, 256, 256, heads * head_dim, dtype, "cuda"),
                                              2, heads)
    temporal = temporal_attention_resources(*temporal_inputs(64, 12, 4, heads * head_dim, dtype, "cuda"), heads)
    for kernel, found in (("reference", reference), ("temporal", temporal)):
        assert found["shared_bytes"] <= max_shared, (kernel, name, found)
        assert found["spills"] == 0, (kernel, name, found)

"""Reference-feature cache: a repeated render of one portrait skips the ReferenceNet and gives the
same frames; keys follow what changes the features; bad entries are ignored and rebuilt."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emo_rt.models import EmoModel
from emo_rt.pipeline import EmoPipeline, RenderSettings
from emo_rt.runtime.components import TorchComponents
from emo_rt.runtime.reference_cache import ReferenceCache, weights_key
from emo_rt.schedulers import noise_schedule

FAST = RenderSettings(steps=1, cfg=2.0, seed=1, overlap=False)


class CountingReference(TorchComponents):
    def __init__(self, model, dtype=torch.float32):
        super().__init__(model, dtype)
        self.reference_calls = 0

    def reference_features(self, latents):
        self.reference_calls += 1
        return super().reference_features(latents)


def pipeline(model, model_dir, cache_dir, dtype=torch.float32):
    comp = CountingReference(model if dtype == torch.float32 else EmoModel.from_pretrained(model_dir, dtype=dtype),
                             dtype)
    return EmoPipeline(comp, noise_schedule(None), ReferenceCache(cache_dir, weights_key(model_dir)))


def render_frames(pipe, inputs):
    return np.concatenate(list(pipe(inputs.reference, inputs.waveform, FAST)))


def test_second_render_reads_the_disk_cache_and_gives_the_same_frames(model, model_dir, inputs, tmp_path):
    first = pipeline(model, model_dir, tmp_path)
    frames = render_frames(first, inputs)
    assert first.components.reference_calls == 1 and first.reference_cache.last_source == "computed"
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".safetensors"  # no temporary files left

    second = pipeline(model, model_dir, tmp_path)  # a new process would see the same: nothing in memory
    again = render_frames(second, inputs)
    assert second.components.reference_calls == 0 and second.reference_cache.last_source == "disk"
    assert np.array_equal(frames, again)


def test_same_pipeline_keeps_the_identity_in_memory_until_the_weights_change(model_dir, inputs, tmp_path):
    model = EmoModel.from_pretrained(model_dir)  # its own copy: modified below
    pipe = EmoPipeline(CountingReference(model), noise_schedule(None))  # memory only
    a = pipe.prepare(inputs.reference)
    b = pipe.prepare(inputs.reference)
    assert pipe.components.reference_calls == 1 and a is b
    with torch.no_grad():
        next(model.reference_net.parameters()).add_(0.1)  # e.g. a training step between renders
    c = pipe.prepare(inputs.reference)
    assert pipe.components.reference_calls == 2
    assert not all(torch.equal(x, y) for x, y in zip(a["features"], c["features"]))
    assert list(tmp_path.iterdir()) == []  # no directory given: nothing on disk


@pytest.mark.parametrize("damage", ["garbage", "truncated", "tensor-bytes"])
def test_a_corrupt_entry_is_ignored_and_rebuilt(model, model_dir, inputs, tmp_path, damage):
    pipe = pipeline(model, model_dir, tmp_path)
    reference = pipe.prepare(inputs.reference)
    (entry,) = tmp_path.iterdir()
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"not a safetensors file" * 10)
    elif damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    else:  # a flipped bit inside a tensor: still a readable safetensors file
        entry.write_bytes(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
    fresh = pipeline(model, model_dir, tmp_path)
    with pytest.warns(UserWarning, match="reference cache: ignoring"):
        rebuilt = fresh.prepare(inputs.reference)
    assert fresh.components.reference_calls == 1
    for x, y in zip(reference["features"], rebuilt["features"]):
        assert torch.equal(x, y)
    assert len(load_file(entry)) == 2 + len(reference["features"])  # rewritten whole
    third = pipeline(model, model_dir, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third.prepare(inputs.reference)
    assert third.components.reference_calls == 0


def test_an_entry_of_another_key_is_not_used(model, model_dir, inputs, tmp_path):
    pipe = pipeline(model, model_dir, tmp_path)
    pipe.prepare(inputs.reference)
    (entry,) = tmp_path.iterdir()
    other = inputs.reference.__class__(**{**inputs.reference.__dict__, "pixels": 255 - inputs.reference.pixels})
    # the right file name for `other`, holding the features of the first image
    entry.rename(pipe.reference_cache.path(pipe.reference_cache.key(other, pipe.components)))
    fresh = pipeline(model, model_dir, tmp_path)
    with pytest.warns(UserWarning, match="another reference"):
        fresh.prepare(other)
    assert fresh.components.reference_calls == 1


def test_the_key_follows_image_mask_weights_config_and_dtype(model, model_dir, inputs, tmp_path):
    cache = ReferenceCache(tmp_path, weights_key(model_dir))
    comp = TorchComponents(model)
    ref = inputs.reference
    key = cache.key(ref, comp)
    assert cache.key(ref, TorchComponents(model)) == key  # the same everything: the same key
    changed = {
        "pixels": cache.key(ref.__class__(**{**ref.__dict__, "pixels": ref.pixels ^ 1}), comp),
        "mask": cache.key(ref.__class__(**{**ref.__dict__, "mask": ref.mask * 0.5}), comp),
        "weights": ReferenceCache(tmp_path, "other weights").key(ref, comp),
        "dtype": cache.key(ref, TorchComponents(EmoModel.from_pretrained(model_dir, dtype=torch.bfloat16),
                                                torch.bfloat16)),
    }
    assert len({key, *changed.values()}) == 1 + len(changed)


def test_weights_key_reads_the_tensors_of_the_parts_it_uses(model_dir, tmp_path):
    import shutil

    copy = Path(shutil.copytree(model_dir, tmp_path / "copy"))
    assert weights_key(copy) == weights_key(model_dir)
    model = EmoModel.from_pretrained(copy)
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)  # the Backbone does not make reference features
    model.save_pretrained(copy)
    assert weights_key(copy) == weights_key(model_dir)
    with torch.no_grad():
        next(model.reference_net.parameters()).add_(1.0)
    model.save_pretrained(copy)
    assert weights_key(copy) != weights_key(model_dir)


def test_the_disk_cache_keeps_at_most_max_entries(model, model_dir, inputs, tmp_path):
    cache = ReferenceCache(tmp_path, weights_key(model_dir), max_entries=2)
    pipe = EmoPipeline(TorchComponents(model), noise_schedule(None), cache)
    ref = inputs.reference
    for shift in range(4):
        pipe.prepare(ref.__class__(**{**ref.__dict__, "pixels": np.roll(ref.pixels, shift, axis=0)}))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert list(tmp_path.glob(".*")) == []

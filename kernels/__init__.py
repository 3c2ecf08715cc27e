"""Triton kernels (one file per op: kernel, launcher, torch reference) and the processor swap
(`emo_rt.kernels.processors.select_attention`).

This file imports nothing on purpose: from the repository root, `kernels/` is also importable as a
top-level `kernels`, a name transformers and diffusers probe for the Hugging Face `kernels`
package; an import here would run during their import and loop back into emo_rt.
"""

"""Synthetic talking-head corpus: seeded drawn identities speaking espeak-ng sentences, with per-frame
ground truth (face box, mouth, brows, blinks, head pose and speed). Entry point: `generate_corpus`."""

from .corpus import ClipSpec, generate_corpus, plan_corpus, render_clip

__all__ = ["ClipSpec", "generate_corpus", "plan_corpus", "render_clip"]

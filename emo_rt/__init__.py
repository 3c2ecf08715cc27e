"""emo-rt: EMO-style audio-driven portrait video generation, trained, exported and run fast."""

__version__ = "0.1.0"

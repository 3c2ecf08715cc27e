"""`emo-rt preprocess`: talking-head videos (or frame folders) -> training shards (docs/data-format.md).

Entry point: `preprocess(input_dir, out_dir, resolution, workers, require_audio, progress)`.
"""

from .clip import ClipSettings, Source, SourceOutcome, process_source
from .reject import REASONS, ClipRejected
from .run import PreprocessReport, preprocess
from .sources import find_sources

__all__ = ["REASONS", "ClipRejected", "ClipSettings", "PreprocessReport", "Source", "SourceOutcome",
           "find_sources", "preprocess", "process_source"]

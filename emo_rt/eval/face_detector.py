"""How readily an independent face detector finds a face in generated frames.

The evaluator's own networks were trained on our corpus and read identity and mouth opening from
coarse features: a face broken into blotchy patches keeps its identity score. mediapipe's
short-range face detection (a model we did not train, shipped inside mediapipe) was trained on
real faces and scores such a face low. Real frames of the synthetic corpus score about 0.9.
"""

from __future__ import annotations

import cv2
import numpy as np

from emo_rt.io.image import mediapipe_detector

DETECT_SIDE = 256  # frames are upscaled to this before detection: the short-range model reads 128 px faces
EVERY = 4  # score every 4th frame: neighbouring frames agree, and detection costs ~3 ms a frame


def face_detector_score(frames: np.ndarray, every: int = EVERY) -> float | None:
    """Mean over frames (N, R, R, 3) uint8 of the best detection score (0 where no face is found
    above the detector's 0.2 floor); None when mediapipe is not installed."""
    detector = mediapipe_detector(0)
    if detector is None:
        return None
    scores = []
    for frame in frames[::every]:
        image = cv2.resize(np.ascontiguousarray(frame), (DETECT_SIDE, DETECT_SIDE), interpolation=cv2.INTER_CUBIC)
        detections = detector.process(image).detections or []
        scores.append(max((float(d.score[0]) for d in detections), default=0.0))
    return float(np.mean(scores)) if scores else None

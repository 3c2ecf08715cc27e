"""Faces in a clip: mediapipe face mesh landmarks per frame (video mode, models shipped with
mediapipe==0.10.21), face counts from mediapipe face detection, and from the landmarks the face
box, the head pose (solvePnP against a generic 3D template) and the head speed.

Conventions: boxes are x, y, w, h in source pixels; the face box is the extent of the mesh's face
oval (forehead to chin, cheek to cheek). Pose is yaw, pitch, roll in degrees: yaw > 0 turns the
face toward image right, pitch > 0 tilts it up, roll > 0 turns it clockwise in the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

NUM_LANDMARKS = 468
MAX_MESH_SIDE = 720  # frames are downscaled to this longer side before mediapipe (it works at 192 px)

# Generic head in millimetres (x toward image right, y down, z away from the camera; origin at the
# nose tip), at rigid landmarks only: nose ridge, eye corners, forehead. Lips, jaw and brows move
# with speech and expression and would leak into the pose.
POSE_TEMPLATE = {
    1: (0.0, 0.0, 0.0),  # nose tip
    4: (0.0, -4.0, 1.0),
    5: (0.0, -11.0, 3.0),
    195: (0.0, -20.0, 7.0),
    197: (0.0, -30.0, 11.0),
    6: (0.0, -40.0, 16.0),
    168: (0.0, -55.0, 22.0),  # between the eyes
    33: (-45.0, -38.0, 40.0),  # outer eye corner, image left
    263: (45.0, -38.0, 40.0),  # outer eye corner, image right
    133: (-16.0, -38.0, 24.0),  # inner eye corners
    362: (16.0, -38.0, 24.0),
    151: (0.0, -90.0, 28.0),  # forehead
    10: (0.0, -113.0, 40.0),  # top of the forehead
}
POSE_INDICES = np.array(list(POSE_TEMPLATE), np.int64)
POSE_POINTS = np.array(list(POSE_TEMPLATE.values()), np.float64)  # (13, 3)
EYE_SPAN_MM = 90.0  # outer eye corner to outer eye corner in the template
_NOSE, _EYE_LEFT, _EYE_RIGHT = (list(POSE_TEMPLATE).index(i) for i in (1, 33, 263))
# Talking-head footage is shot with normal to long lenses: focal length 3x the frame's longer side
# (~19 degree field of view). A short focal length on such footage turns sideways head shifts into yaw.
FOCAL_FACTOR = 3.0
POSE_SMOOTHING_SECONDS = 0.1  # Gaussian sigma over frames: landmark jitter is above the ~2 Hz of head motion
MAX_GAP_FRAMES = 5  # frames without a face this short are interpolated
SECOND_FACE_MIN_AREA = 0.1  # another face counts from this fraction of the main face's box area
SECOND_FACE_MIN_SCORE = 0.7  # and this detection score (patterned backdrops give ~0.5 false faces)


def face_oval_indices() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    return np.array(sorted({i for edge in FACEMESH_FACE_OVAL for i in edge}), np.int64)


@dataclass
class FaceTrack:
    """Per-frame results of `track_faces` over N frames."""

    landmarks: np.ndarray  # float32 (N, 468, 2) source pixels; NaN where no face was found
    face_counts: np.ndarray  # int16 (N,) faces detected; -1 on frames not sampled
    width: int
    height: int


def track_faces(frames: Iterable[np.ndarray], detect_every: int = 5) -> FaceTrack:
    """Face mesh on every frame (tracking, one face), face detection on every `detect_every`-th."""
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                           refine_landmarks=False, min_detection_confidence=0.5,
                                           min_tracking_confidence=0.5)
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    landmarks: list[np.ndarray] = []
    counts: list[int] = []
    width = height = 0
    with mesh, detector:
        for i, frame in enumerate(frames):
            height, width = frame.shape[:2]
            small = _downscale(frame)
            result = mesh.process(small)
            if result.multi_face_landmarks:
                points = result.multi_face_landmarks[0].landmark
                xy = np.array([(p.x, p.y) for p in points], np.float32) * np.float32((width, height))
            else:
                xy = np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
            landmarks.append(xy)
            counts.append(_count_faces(detector.process(small)) if i % detect_every == 0 else -1)
    if not landmarks:
        return FaceTrack(np.zeros((0, NUM_LANDMARKS, 2), np.float32), np.zeros(0, np.int16), 0, 0)
    return FaceTrack(np.stack(landmarks), np.array(counts, np.int16), width, height)


def _downscale(frame: np.ndarray) -> np.ndarray:
    side = max(frame.shape[:2])
    if side <= MAX_MESH_SIDE:
        return np.ascontiguousarray(frame)
    scale = MAX_MESH_SIDE / side
    size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _count_faces(result) -> int:
    """Faces in a detection result: the best one, plus others that are confident, not tiny next to
    it and not a second box on the same face."""
    if not result.detections:
        return 0
    scored = sorted(((d.score[0], d.location_data.relative_bounding_box) for d in result.detections),
                    key=lambda sb: -sb[0])
    boxes = [np.array([b.xmin, b.ymin, b.width, b.height]) for _, b in scored]
    main = boxes[0]
    others = [box for (score, _), box in zip(scored[1:], boxes[1:])
              if score >= SECOND_FACE_MIN_SCORE and box[2] * box[3] >= SECOND_FACE_MIN_AREA * main[2] * main[3]
              and box_iou(box, main) < 0.3]
    return 1 + len(others)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x, y, w, h boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def fill_gaps(landmarks: np.ndarray, max_gap: int = MAX_GAP_FRAMES) -> np.ndarray:
    """Interpolate landmarks linearly over runs of at most `max_gap` missing frames between two
    found ones (longer runs and the ends stay NaN)."""
    found = ~np.isnan(landmarks[:, 0, 0])
    out = landmarks.copy()
    idx = np.flatnonzero(found)
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= max_gap + 1:
            w = ((np.arange(a + 1, b) - a) / (b - a))[:, None, None].astype(np.float32)
            out[a + 1:b] = landmarks[a] * (1 - w) + landmarks[b] * w
    return out


def runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of True in a bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    yield from zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist())


def face_boxes(landmarks: np.ndarray) -> np.ndarray:
    """(N, 468, 2) -> float32 (N, 4) x, y, w, h of the face oval."""
    oval = landmarks[:, face_oval_indices()]
    lo, hi = oval.min(axis=1), oval.max(axis=1)
    return np.concatenate([lo, hi - lo], axis=1).astype(np.float32)


def head_pose(landmarks: np.ndarray, width: int, height: int, fps: float) -> np.ndarray:
    """(N, 468, 2) -> float32 (N, 3) yaw, pitch, roll in degrees, low-passed over time (see
    POSE_SMOOTHING_SECONDS). Each frame is solved from a frontal start, so frames are independent."""
    focal = FOCAL_FACTOR * max(width, height)
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)
    pose = np.zeros((len(landmarks), 3), np.float64)
    for t, points in enumerate(landmarks[:, POSE_INDICES].astype(np.float64)):
        points = np.ascontiguousarray(points)  # (13, 2)
        eye_span = float(np.linalg.norm(points[_EYE_RIGHT] - points[_EYE_LEFT]))
        z = focal * EYE_SPAN_MM / max(eye_span, 1.0)  # start: frontal, at the distance the eye span gives
        nose = points[_NOSE]
        rvec = np.zeros((3, 1))
        tvec = np.array([[(nose[0] - width / 2) * z / focal], [(nose[1] - height / 2) * z / focal], [z]])
        ok, rvec, tvec = cv2.solvePnP(POSE_POINTS, points, camera, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        pose[t] = euler_angles(cv2.Rodrigues(rvec)[0]) if ok else np.nan
    if len(pose) and np.isnan(pose).any():  # solver failures: nearest good frame
        good = ~np.isnan(pose[:, 0])
        if good.any():
            pose = np.array([np.interp(np.arange(len(pose)), np.flatnonzero(good), pose[good, j])
                             for j in range(3)]).T
    if len(pose) > 1:
        pose = gaussian_filter1d(pose, POSE_SMOOTHING_SECONDS * fps, axis=0, mode="nearest")
    return pose.astype(np.float32)


def euler_angles(rotation: np.ndarray) -> np.ndarray:
    """Camera-from-head rotation -> yaw, pitch, roll (degrees) in this module's conventions.

    rotation = Rz(roll) @ Rx(pitch) @ Ry(-yaw) in OpenCV camera axes (x right, y down, z forward)."""
    pitch = np.degrees(np.arcsin(np.clip(rotation[2, 1], -1.0, 1.0)))
    yaw = -np.degrees(np.arctan2(-rotation[2, 0], rotation[2, 2]))
    roll = np.degrees(np.arctan2(-rotation[0, 1], rotation[1, 1]))
    return np.array([yaw, pitch, roll])

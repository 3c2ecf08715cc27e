"""Draws frames of a shaded 2.5D head with OpenCV: an identity, a head pose and an expression in,
an RGB frame and the face box out.

Face coordinates (see identity.py): outline half width 1, x right, y down, eye line y = 0, z toward
the camera. Features lie on an ellipsoid-like surface and are rotated about a pivot behind the face,
then projected orthographically, so yaw moves the nose and eyes more than the outline (2.5D).
Pose conventions: yaw > 0 turns the face toward image right, pitch > 0 tilts it up, roll > 0 turns
it clockwise in the image. Polygons are drawn anti-aliased with 4-bit sub-pixel coordinates, so
slow motion is smooth. All points of a frame are projected in two batched calls (speed).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .identity import Background, Identity

_SHIFT = 4                    # fixed-point bits of the polygon coordinates handed to OpenCV
_ONE = float(1 << _SHIFT)
_PIVOT = np.array([0.0, 0.35, -0.9])  # rotation centre (face units), behind the face, near the neck
_DEPTH = 0.75                 # depth of the face surface at its centre
MAX_GAP = 0.36                # lip gap at mouth_open = 1 (face units; the face is 2 units wide)
_JAW = 0.8                    # the chin drops by this fraction of the lip gap
_EYE_WHITE = (236, 233, 228)
_MOUTH_INSIDE = (58, 20, 26)
_TEETH = (236, 232, 222)
_TONGUE = (176, 84, 92)
_LASH = (34, 22, 22)
_TEX_STEP = 0.03              # face units per texel of the shading texture
_TEX_X = (-1.12, 1.12)
_TEX_Y = (-1.3, 1.9)


@dataclass(frozen=True)
class Pose:
    yaw: float = 0.0      # degrees
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0       # head translation, fraction of the frame size
    ty: float = 0.0


@dataclass(frozen=True)
class Expression:
    mouth_open: float = 0.0   # 0 closed .. 1 wide open (lip gap MAX_GAP)
    mouth_width: float = 1.0  # relative lip width (< 1 rounded, > 1 spread)
    brow_raise: float = 0.0   # 0 .. 1
    blink: float = 0.0        # 0 open .. 1 closed
    gaze_x: float = 0.0       # -1 .. 1 (iris offset as a fraction of its travel)
    gaze_y: float = 0.0


def _scale(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> OpenCV's fixed point (int32, _SHIFT fractional bits)."""
    return np.round(points * _ONE).astype(np.int32)


def _fill(img: np.ndarray, points: np.ndarray, colour) -> None:
    """Anti-aliased polygon; `points` (N, 2) in fixed point."""
    cv2.fillPoly(img, [points], colour, cv2.LINE_AA, _SHIFT)


def _stroke(img: np.ndarray, points: np.ndarray, colour, thickness: int, closed: bool = False) -> None:
    """Anti-aliased polyline; `points` (N, 2) in fixed point."""
    cv2.polylines(img, [points], closed, colour, max(1, int(thickness)), cv2.LINE_AA, _SHIFT)


def _bounds(points: np.ndarray, size: int, margin: int) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1) around fixed-point points, grown by `margin`, clipped."""
    lo = points.min(0) >> _SHIFT
    hi = (points.max(0) >> _SHIFT) + 1
    return (max(0, int(lo[0]) - margin), max(0, int(lo[1]) - margin),
            min(size, int(hi[0]) + margin), min(size, int(hi[1]) + margin))


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, power: float = 2.0) -> np.ndarray:
    """(n, 2) points of a superellipse (power 2: an ellipse)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return np.stack([cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e], 1)


def _blend_into(img: np.ndarray, x0: int, y0: int, patch: np.ndarray, mask: np.ndarray) -> None:
    """img[y0:, x0:] = patch over img with an 8-bit alpha mask (same shape as patch[..., 0])."""
    h, w = mask.shape
    roi = img[y0:y0 + h, x0:x0 + w]
    a = mask[..., None].astype(np.uint16)
    roi[:] = ((patch.astype(np.uint16) * a + roi.astype(np.uint16) * (255 - a) + 127) // 255).astype(np.uint8)


def render_background(bg: Background, size: int) -> np.ndarray:
    """The static backdrop, (size, size, 3) uint8 RGB."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = np.asarray(bg.colour_a, np.float32)
    b = np.asarray(bg.colour_b, np.float32)
    ang = np.deg2rad(bg.angle_deg)
    proj = xx * np.cos(ang) + yy * np.sin(ang)
    if bg.kind == "solid":
        t = np.zeros_like(xx)
    elif bg.kind == "linear":
        t = (proj - proj.min()) / max(1e-6, float(np.ptp(proj)))
    elif bg.kind == "radial":
        t = np.clip(np.hypot(xx - 0.5, yy - 0.42) / 0.75, 0, 1)
    elif bg.kind == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / bg.period)
        t = np.clip((t - 0.5) * 3 + 0.5, 0, 1)
    elif bg.kind == "dots":
        p = bg.period
        d = np.hypot((xx % p) / p - 0.5, (yy % p) / p - 0.5)
        t = np.clip((0.3 - d) * 12, 0, 1)
    elif bg.kind == "checker":
        p = bg.period * 1.5
        t = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32) * 0.8
    elif bg.kind == "bokeh":
        rng = np.random.default_rng(bg.seed)
        t = np.zeros_like(xx)
        for _ in range(14):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.04, 0.14)
            t = np.maximum(t, np.clip((r - np.hypot(xx - cx, yy - cy)) / (0.3 * r), 0, 1) * rng.uniform(0.4, 1))
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    img = a * (1 - t[..., None]) + b * t[..., None]
    vignette = 1.0 - 0.25 * np.clip(np.hypot(xx - 0.5, yy - 0.5) / 0.7, 0, 1) ** 2
    img = img * vignette[..., None]
    if bg.kind == "bokeh":
        img = cv2.GaussianBlur(img, (0, 0), size / 80)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


class _Camera:
    """Rotates face-space points by the pose about the pivot and projects them to pixels."""

    def __init__(self, ident: Identity, pose: Pose, size: int):
        y, p, r = np.deg2rad([pose.yaw, -pose.pitch, pose.roll])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        self.rotation = rz @ rx @ ry                                     # (3, 3) face -> camera
        self.scale = ident.face_scale * size                             # pixels per face unit
        self.centre = np.array([(ident.centre_x + pose.tx) * size, (ident.centre_y + pose.ty) * size])
        self.body_centre = np.array([(ident.centre_x + 0.3 * pose.tx) * size, ident.centre_y * size])

    def project(self, points3: np.ndarray) -> np.ndarray:
        """(N, 3) face-space points -> (N, 2) pixel coordinates."""
        rotated = (points3 - _PIVOT) @ self.rotation.T + _PIVOT
        return self.centre + self.scale * rotated[:, :2]

    def affine(self, z: float) -> np.ndarray:
        """(2, 3) affine map from face (x, y) on the plane at depth z to pixels."""
        basis = self.project(np.array([[0, 0, z], [1, 0, z], [0, 1, z]], np.float64))
        return np.column_stack([basis[1] - basis[0], basis[2] - basis[0], basis[0]])


class _Points:
    """Named groups of face-space points, projected in one call to fixed-point pixels. A group is
    either 3D (`add`) or 2D on the face surface plus a lift (`add_surface`; depths computed together)."""

    def __init__(self, surface_z) -> None:
        self._surface_z = surface_z
        self._names3: list[str] = []
        self._arrays3: list[np.ndarray] = []
        self._names2: list[str] = []
        self._arrays2: list[np.ndarray] = []
        self._lifts: list[float] = []
        self._packed: np.ndarray | None = None

    def add(self, name: str, points3: np.ndarray) -> None:
        self._names3.append(name)
        self._arrays3.append(points3)

    def add_surface(self, name: str, points2: np.ndarray, lift: float = 0.0) -> None:
        self._names2.append(name)
        self._arrays2.append(points2)
        self._lifts.append(lift)

    def pack(self) -> np.ndarray:
        """(N, 3) all points, surface groups first (cached: static point sets pack once)."""
        if self._packed is None:
            parts = []
            if self._arrays2:
                xy = np.concatenate(self._arrays2)
                lift = np.repeat(self._lifts, [len(a) for a in self._arrays2])
                parts.append(np.column_stack([xy, self._surface_z(xy[:, 0], xy[:, 1]) + lift]))
            parts.extend(self._arrays3)
            self._packed = np.concatenate(parts)
        return self._packed

    def project(self, cam: _Camera) -> dict[str, np.ndarray]:
        """name -> (n, 2) int32 fixed-point pixel coordinates."""
        flat = _fixed(cam.project(self.pack()))
        out, k = {}, 0
        for name, a in zip(self._names2 + self._names3, self._arrays2 + self._arrays3):
            out[name] = flat[k:k + len(a)]
            k += len(a)
        return out


class FaceRenderer:
    """Renders one identity at `size` x `size`. Build once per clip, call `render` per frame."""

    def __init__(self, ident: Identity, size: int):
        self.ident = ident
        self.size = size
        self.background = render_background(ident.background, size)
        self.line_px = max(1, int(round(size / 160)))
        self.light = np.asarray(ident.light, np.float64)
        half = self.light + np.array([0.0, 0.0, 1.0])
        self.half_vector = half / np.linalg.norm(half)
        self.shadow_side = 1.0 if ident.light[0] < 0 else -1.0   # nose side away from the light
        skin = ident.skin
        self.colours = {
            "neck": _scale(skin, 0.8), "neck_shadow": _scale(skin, 0.64), "v": _scale(skin, 0.74),
            "ear": _scale(skin, 0.84), "ear_inner": _scale(skin, 0.62), "lid": _scale(skin, 0.72),
            "crease": _scale(skin, 0.78), "bridge": _scale(skin, 0.8), "wing": _scale(skin, 0.7),
            "nostril": _scale(skin, 0.42), "tip": _scale(skin, 1.07), "upper_lip": _scale(ident.lips, 0.86),
            "lip_line": _scale(ident.lips, 0.45), "lip_shine": _scale(ident.lips, 1.18),
            "iris_ring": _scale(ident.iris, 1.25), "collar": _scale(ident.shirt, 0.7),
            "hair_back": _scale(ident.hair, 0.72), "bald": _scale(ident.hair, 0.9),
        }
        hair = ident.hair if ident.hair_style != "buzz" else \
            tuple(int(0.6 * h + 0.4 * s) for h, s in zip(ident.hair, skin))
        self.colours["hair"] = hair
        self.colours["strand"] = _scale(hair, 0.78)
        self._outline_t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        self._unit20 = _ellipse(0, 0, 1, 1, 20)
        # per-identity constants of the eye, brow and lip curves
        self._u13 = np.linspace(-1, 1, 13)
        self._eye_arc = (1 - self._u13**2) ** 0.7
        self._t10 = np.linspace(0, 1, 10)
        t10 = self._t10
        self._brow_x = 0.14 + t10 * ident.brow_length
        self._brow_y = -ident.eye_height - ident.brow_gap - ident.brow_arch * np.sin(np.pi * t10**0.8) + 0.04 * t10
        self._brow_th = ident.brow_thickness * (1.0 - 0.55 * t10) / 2
        self._u17 = np.linspace(-1, 1, 17)
        bell = 1 - self._u17**2
        self._lip_profiles = (bell, bell**0.8, bell**0.6, bell**0.7 * (1 - 0.3 * np.exp(-(self._u17 / 0.16) ** 2)))
        self._teeth_span = np.abs(self._u17) <= 0.72
        self._static = self._static_points()
        self._static.pack()
        self._body = self._body_points()
        self._init_texture()

    # -- geometry ---------------------------------------------------------------------------------

    def surface_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Depth of the face surface at face coordinates (x, y)."""
        i = self.ident
        yd = np.where(y > 0, i.chin_depth * 1.15, i.skull * 1.25)
        return _DEPTH * np.sqrt(np.clip(1 - x * x - (y / yd) ** 2, 0.02, None))

    @staticmethod
    def _at_depth(pts2: np.ndarray, z: float) -> np.ndarray:
        return np.column_stack([pts2, np.full(len(pts2), z)])

    def outline(self, jaw_drop: float) -> np.ndarray:
        """(96, 3) face outline (chin included, hair excluded), the jaw lowered by `jaw_drop`."""
        i = self.ident
        c, s = np.cos(self._outline_t), np.sin(self._outline_t)
        e = 2.0 / i.squareness
        x = np.sign(c) * np.abs(c) ** e
        y_unit = np.sign(s) * np.abs(s) ** e
        y = np.where(y_unit > 0, y_unit * i.chin_depth, y_unit * i.forehead)
        lower = np.clip(y / i.chin_depth, 0, 1)
        x = x * (1 - i.jaw_taper * lower**2)
        y = y + jaw_drop * np.clip((y - i.mouth_y + 0.15) / 0.35, 0, 1)
        return np.column_stack([x, y, 0.35 * (1 - x * x)])

    def _static_points(self) -> _Points:
        """Everything that moves rigidly with the head: ears, nose, hair, glasses, neck top."""
        i = self.ident
        pts = _Points(self.surface_z)
        pts.add("neck_top", np.array([[-0.52, 0.7, -0.35], [0.52, 0.7, -0.35]]))
        for s, name in ((-1.0, "l"), (1.0, "r")):
            ear = _ellipse(s * 0.98, 0.1, 0.17 * i.ear_size, 0.3 * i.ear_size, 20)
            pts.add("ear_" + name, self._at_depth(ear, -0.25))
            pts.add("ear_inner_" + name,
                    self._at_depth(_ellipse(s * 1.02, 0.1, 0.08 * i.ear_size, 0.2 * i.ear_size, 16), -0.24))
        # nose: bridge shadow away from the light, wings, nostrils, tip highlight
        nl, nw, sh = i.nose_length, i.nose_width, self.shadow_side
        t = np.linspace(0, 1, 6)
        bridge = np.column_stack([sh * (0.07 + 0.05 * t), -0.02 + t * nl * 0.82])
        pts.add("bridge", np.column_stack([bridge, self.surface_z(bridge[:, 0], bridge[:, 1]) + 0.24 * t**2]))
        base_z = float(self.surface_z(np.zeros(1), np.array([nl]))[0])
        a = np.linspace(-0.55 * np.pi, 0.55 * np.pi, 9)
        for s, name in ((-1.0, "l"), (1.0, "r")):
            wing = np.column_stack([s * (nw * 0.8 + nw * 0.32 * np.cos(a)), nl - 0.02 + 0.09 * np.sin(a)])
            pts.add("wing_" + name, self._at_depth(wing, base_z + 0.12))
            nostril = _ellipse(s * nw * 0.42, nl + 0.035, 0.055, 0.026, 12)
            pts.add("nostril_" + name, self._at_depth(nostril, base_z + 0.14))
        pts.add("tip", self._at_depth(_ellipse(-sh * 0.015, nl - 0.07, 0.05, 0.04, 10), base_z + 0.3))
        self._add_hair(pts)
        if i.glasses != "none":
            self._add_glasses(pts)
        return pts

    def _body_points(self) -> dict[str, np.ndarray]:
        """Torso outlines in face units around the (unrotated) head centre."""
        i = self.ident
        body = {"neck_bottom": np.array([[0.56, 2.4], [-0.56, 2.4]]),
                "shirt": np.array([[-0.5, 2.05], [-1.3, 2.2], [-2.4, 2.45], [-3.2, 2.9], [-3.4, 4.0],
                                   [3.4, 4.0], [3.2, 2.9], [2.4, 2.45], [1.3, 2.2], [0.5, 2.05]])}
        if i.collar == "v":
            body["collar"] = np.array([[-0.5, 2.0], [0.5, 2.0], [0.0, 2.75]])
        elif i.collar == "crew":
            body["collar"] = _ellipse(0, 2.02, 0.62, 0.22, 32)[:17]
        else:
            for s, name in ((-1, "l"), (1, "r")):
                body["collar_" + name] = np.array([[s * 0.5, 1.95], [s * 0.05, 2.45], [s * 0.85, 2.3]])
        return body

    def _add_hair(self, pts: _Points) -> None:
        i = self.ident
        style = i.hair_style
        if style in ("long", "bob", "curly"):
            length = {"long": 2.3, "bob": 1.05, "curly": 0.75}[style]
            width = {"long": 1.32, "bob": 1.38, "curly": 1.5}[style]
            t = np.linspace(np.pi, 2 * np.pi, 15)
            top = np.column_stack([width * np.cos(t), -(i.skull + i.hair_volume * 1.2) * np.abs(np.sin(t))])
            back = np.vstack([[[-width * 0.95, length]], top, [[width * 0.95, length]]])
            pts.add("hair_back", self._at_depth(back, -0.6))
        elif style == "bun":
            pts.add("hair_back", self._at_depth(_ellipse(0, -i.skull - i.hair_volume - 0.3, 0.42, 0.36, 20), -0.4))
        t = np.linspace(np.pi * 1.04, np.pi * 1.96, 25)   # left temple -> over the skull -> right temple
        c, s = np.cos(t), np.sin(t)
        if style == "bald":
            # bare scalp, shaded with the face (see _draw_skin), and a little hair above the ears
            scalp = np.column_stack([1.0 * c, -i.skull * np.abs(s) ** 0.9])
            pts.add("scalp", self._at_depth(np.vstack([scalp, [[0.9, 0.0], [-0.9, 0.0]]]), 0.0))
            for s_, name in ((-1.0, "l"), (1.0, "r")):
                patch = np.array([[s_ * 0.93, -0.45], [s_ * 1.08, -0.4], [s_ * 1.06, 0.0], [s_ * 0.95, -0.05]])
                pts.add("bald_" + name, self._at_depth(patch, -0.05))
            return
        # top hair: over the skull from temple to temple, then back along the hairline
        vol = 0.035 if style == "buzz" else i.hair_volume * (1.6 if style == "curly" else 1.0)
        bumps = 1 + 0.05 * np.sin(9 * t) if style == "curly" else np.ones_like(t)
        outer = np.column_stack([(1.02 + vol) * c * bumps, -(i.skull + vol * 1.3) * np.abs(s) ** 0.9 * bumps,
                                 np.full(len(t), -0.05)])
        xs = np.linspace(1.0, -1.0, 21)
        if style == "fringe":
            hy = -0.42 - 0.18 * xs**4 + 0.035 * np.abs(np.sin(xs * 14))
        elif style == "side_part":
            hy = i.hairline + 0.3 * np.clip(xs - i.parting, 0, None) ** 2 - 0.1 * (1 - xs * xs) + 0.25 * xs**4
        else:
            hy = i.hairline + 0.08 * xs * xs + 0.25 * xs**6
        hy = np.minimum(hy, -0.22)
        hairline = np.column_stack([xs, hy, self.surface_z(xs, hy) + 0.03])
        sideburns_r = np.array([[1.02, -0.05, 0.0], [0.9, -0.08, 0.1]])
        sideburns_l = np.array([[-0.9, -0.08, 0.1], [-1.02, -0.05, 0.0]])
        pts.add("hair_top", np.vstack([outer, sideburns_r, hairline[1:-1], sideburns_l]))
        part = np.array([i.parting * 0.6, -i.skull - 0.05])
        for k in range(7):
            end = outer[3 + 3 * k, :2] * 0.96
            mid = (part + end) / 2 + np.array([0, -0.06])
            pts.add(f"strand_{k}", np.column_stack([np.vstack([part, mid, end]), [0.2, 0.1, -0.05]]))
        if style in ("long", "bob"):
            bottom = 0.9 if style == "bob" else 1.6
            for s, name in ((-1.0, "l"), (1.0, "r")):
                lock = np.array([[s * 0.9, -0.5], [s * 1.16, -0.45], [s * 1.26, bottom],
                                 [s * 1.06, bottom + 0.06], [s * 0.98, 0.2]])
                pts.add("lock_" + name, self._at_depth(lock, 0.0))

    def _add_glasses(self, pts: _Points) -> None:
        i = self.ident
        rims = []
        for s, name in ((-1.0, "l"), (1.0, "r")):
            cx = s * i.eye_spacing
            if i.glasses == "round":
                rim, half_w = _ellipse(cx, -0.01, i.eye_width * 1.35, i.eye_width * 1.15, 28), i.eye_width * 1.35
            else:
                rim, half_w = _ellipse(cx, 0.0, i.eye_width * 1.5, i.eye_height * 2.3, 28, power=4.0), i.eye_width * 1.5
            z = float(self.surface_z(np.full(1, cx), np.zeros(1))[0]) + 0.15
            rim3 = self._at_depth(rim, z)
            rims.append(rim3)
            pts.add("rim_" + name, rim3)
            pts.add("arm_" + name, np.array([[cx + s * half_w, -0.03, z], [s * 1.0, -0.02, 0.0]]))
        inner_l = rims[0][np.argmax(rims[0][:, 0])]
        inner_r = rims[1][np.argmin(rims[1][:, 0])]
        pts.add("glasses_bridge", np.array([inner_l, [0.0, -0.06, inner_l[2] + 0.12], inner_r]))

    def _init_texture(self) -> None:
        """Face-space normals and colour modifiers of the skin texture (lit per frame)."""
        i = self.ident
        xs = np.arange(_TEX_X[0], _TEX_X[1] + 1e-9, _TEX_STEP, dtype=np.float32)
        ys = np.arange(_TEX_Y[0], _TEX_Y[1] + 1e-9, _TEX_STEP, dtype=np.float32)
        fx, fy = np.meshgrid(xs, ys)                                          # (th, tw)
        yd = np.where(fy > 0, i.chin_depth * 1.15, i.skull * 1.25).astype(np.float32)
        fz = _DEPTH * np.sqrt(np.clip(1 - fx * fx - (fy / yd) ** 2, 0.02, None))
        n = np.stack([fx, fy / (yd * yd), fz / (_DEPTH * _DEPTH)], -1)        # ellipsoid normal
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
        self._tex_normals = n.reshape(-1, 3).astype(np.float32)                # (th*tw, 3)
        self._tex_shape = fx.shape
        socket = np.exp(-((np.abs(fx) - i.eye_spacing) ** 2 / 0.05 + (fy + 0.05) ** 2 / 0.012))
        self._tex_socket = (1 - 0.1 * socket).reshape(-1).astype(np.float32)
        blush = 0.22 * np.exp(-((np.abs(fx) - 0.55) ** 2 + (fy - 0.42) ** 2) / 0.05)
        tint = 1 - blush[..., None] * np.array([0.0, 0.35, 0.3], np.float32)
        self._tex_base = (np.asarray(i.skin, np.float32) * tint).reshape(-1, 3)  # (th*tw, 3)
        self._tex_to_face = np.array([[_TEX_STEP, 0, _TEX_X[0]], [0, _TEX_STEP, _TEX_Y[0]], [0, 0, 1]])
        self._warm = np.array([0.18, 0.0, -0.12], np.float32)
        self.light = self.light.astype(np.float32)
        self.half_vector = self.half_vector.astype(np.float32)

    # -- rendering --------------------------------------------------------------------------------

    def render(self, pose: Pose, expr: Expression) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """One frame: (size, size, 3) uint8 RGB and the face outline's box [x, y, w, h] in pixels."""
        i = self.ident
        cam = _Camera(i, pose, self.size)
        gap = float(np.clip(expr.mouth_open, 0, 1)) * MAX_GAP
        st = self._static.project(cam)
        dyn = self._dynamic_points(expr, gap).project(cam)
        c = self.colours
        img = self.background.copy()

        if "hair_back" in st:
            _fill(img, st["hair_back"], c["hair_back"])
        self._draw_body(img, cam, st["neck_top"])
        for s in ("l", "r"):
            _fill(img, st["ear_" + s], c["ear"])
            _stroke(img, st["ear_inner_" + s], c["ear_inner"], self.line_px, closed=True)
        self._draw_skin(img, cam, dyn["outline"], st.get("scalp"))
        _stroke(img, st["bridge"], c["bridge"], self.line_px + 1)
        for s in ("l", "r"):
            _stroke(img, st["wing_" + s], c["wing"], self.line_px)
            _fill(img, st["nostril_" + s], c["nostril"])
        _fill(img, st["tip"], c["tip"])
        for s in ("l", "r"):
            self._draw_eye(img, dyn, s, openness=1 - float(np.clip(expr.blink, 0, 1)))
            _fill(img, dyn["brow_" + s], i.brows)
        self._draw_mouth(img, dyn, gap * cam.scale)
        self._draw_hair(img, st)
        if i.glasses != "none":
            thick = self.line_px + 1
            for s in ("l", "r"):
                _stroke(img, st["rim_" + s], i.glasses_colour, thick, closed=True)
                _stroke(img, st["arm_" + s], i.glasses_colour, thick)
            _stroke(img, st["glasses_bridge"], i.glasses_colour, thick)
        img = cv2.GaussianBlur(img, (3, 3), 0.55)

        outline = dyn["outline"] / _ONE
        lo = np.clip(outline.min(0), 0, self.size)
        hi = np.clip(outline.max(0), 0, self.size)
        return img, (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))

    def _dynamic_points(self, expr: Expression, gap: float) -> _Points:
        """Outline (jaw), eyes (blink, gaze), brows (raise) and lips (opening, width) of this frame."""
        i = self.ident
        pts = _Points(self.surface_z)
        pts.add("outline", self.outline(_JAW * gap))
        # eyes
        ew, eh = i.eye_width, i.eye_height
        u = self._u13
        raise_ = float(np.clip(expr.brow_raise, 0, 1))
        openness = 1 - float(np.clip(expr.blink, 0, 1))
        upper_open = -eh * self._eye_arc * (1 + 0.15 * raise_)
        lower = eh * 0.55 * (1 - u * u)
        upper = lower + (upper_open - lower) * openness
        r_iris = 0.46 * ew * i.iris_size
        t10 = self._t10
        for s, name in ((-1.0, "l"), (1.0, "r")):
            ex = s * i.eye_spacing
            tilt = -i.eye_tilt * u * s
            xs = ex + u * ew
            pts.add_surface("lid_up_" + name, np.column_stack([xs, upper + tilt]))
            pts.add_surface("lid_lo_" + name, np.column_stack([xs, lower + tilt]))
            end = tilt[-1 if s > 0 else 0]
            pts.add_surface("flick_" + name, np.array([[ex + s * ew, end], [ex + s * ew * 1.18, end - 0.04]]))
            crease = np.column_stack([ex + u[2:-2] * ew * 0.95, upper_open[2:-2] - 0.05 - 0.03 * openness + tilt[2:-2]])
            pts.add_surface("crease_" + name, crease)
            centre = np.array([ex + expr.gaze_x * ew * 0.35, -0.1 * eh + expr.gaze_y * eh * 0.3])
            circle = self._unit20 * r_iris
            pts.add_surface("iris_" + name, circle + centre, 0.02)
            pts.add_surface("ring_" + name, circle * 0.62 + centre, 0.02)
            pts.add_surface("pupil_" + name, circle * 0.42 + centre, 0.02)
            pts.add_surface("glint_" + name, circle[::2] * 0.16 + centre - 0.35 * r_iris, 0.03)
            # brow: the inner end rises more than the outer one
            y = self._brow_y - raise_ * 0.11 * (1 - 0.35 * t10)
            x = s * self._brow_x
            brow = np.vstack([np.column_stack([x, y - self._brow_th]), np.column_stack([x, y + self._brow_th])[::-1]])
            pts.add_surface("brow_" + name, brow, 0.02)
        # lips: the upper lip moves up by 15% of the gap, the lower lip (with the jaw) by 85%
        width_factor = float(np.clip(expr.mouth_width, 0.7, 1.3))
        pucker = float(np.clip((1 - width_factor) / 0.12, 0, 1))
        w = i.mouth_width * width_factor * (1 - 0.08 * gap / MAX_GAP)
        ul = i.upper_lip * (1 + 0.3 * pucker)
        ll = i.lower_lip * (1 + 0.3 * pucker)
        my = i.mouth_y
        u = self._u17
        bell, b8, b6, bow = self._lip_profiles
        up_gap, lo_gap = 0.15 * gap, 0.85 * gap
        lift = 0.06 + 0.08 * pucker
        x = u * w
        upper_inner = np.column_stack([x, my - up_gap * b8 + 0.08 * ul * bell])
        lower_inner = np.column_stack([x, my + lo_gap * b8])
        pts.add_surface("upper_outer", np.column_stack([x, my - ul * bow - up_gap * b8]), lift)
        pts.add_surface("upper_inner", upper_inner, lift)
        pts.add_surface("lower_inner", lower_inner, lift)
        pts.add_surface("lower_outer", np.column_stack([x, my + lo_gap * b8 + ll * b6]), lift)
        k = self._teeth_span
        tooth = min(0.06, 0.55 * gap)
        pts.add_surface("teeth", np.vstack([upper_inner[k], (upper_inner[k] + [0, tooth])[::-1]]), lift)
        pts.add_surface("tongue", self._unit20 * [0.5 * w, 0.3 * gap] + [0, my + lo_gap - 0.01], lift)
        pts.add_surface("shine", np.column_stack([x[6:11] * 0.9, lower_inner[6:11, 1] + 0.55 * ll]), lift)
        return pts

    def _draw_skin(self, img: np.ndarray, cam: _Camera, outline: np.ndarray, scalp: np.ndarray | None) -> None:
        """Shaded face (and bald scalp): the face-space texture is lit for this pose (Lambert + a little
        specular, warm shadows), warped to the image with the face plane's affine map, cut by the outline."""
        i = self.ident
        region = outline if scalp is None else np.vstack([outline, scalp])
        x0, y0, x1, y1 = _bounds(region, self.size, 2)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        rot = cam.rotation.astype(np.float32)
        light = rot.T @ self.light                      # light and half vector in face space
        half = rot.T @ self.half_vector
        lambert = np.clip(self._tex_normals @ light, 0, 1)
        h = np.clip(self._tex_normals @ half, 0, 1)
        h8 = (h * h) ** 4
        spec = h8 * h8 * h8 * 0.12                       # (n . h)^24
        shade = (i.ambient + (1.05 - i.ambient) * lambert) * self._tex_socket
        # shadows go warm: red falls off slower, blue faster
        rgb = self._tex_base * (shade[:, None] * (1 + (1 - shade)[:, None] * self._warm)) + 255 * spec[:, None]
        tex = np.clip(rgb, 0, 255).astype(np.uint8).reshape(*self._tex_shape, 3)
        # texel -> face -> pixel (ROI) affine map, using the plane at mid depth
        face_to_px = np.vstack([cam.affine(0.45), [0, 0, 1]])
        m = (face_to_px @ self._tex_to_face)[:2]
        m[:, 2] -= [x0, y0]
        patch = cv2.warpAffine(tex, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        off = np.array([x0, y0], np.int32) << _SHIFT
        _fill(mask, outline - off, 255)
        if scalp is not None:
            _fill(mask, scalp - off, 255)
        _blend_into(img, x0, y0, patch, mask)

    def _draw_body(self, img: np.ndarray, cam: _Camera, neck_top: np.ndarray) -> None:
        i, c = self.ident, self.colours
        body = {name: _fixed(cam.body_centre + cam.scale * pts) for name, pts in self._body.items()}
        bottom = body["neck_bottom"]
        _fill(img, np.vstack([neck_top, bottom]), c["neck"])
        shadow = np.vstack([neck_top, np.round(neck_top[::-1] * 0.6 + bottom * 0.4).astype(np.int32)])
        _fill(img, shadow, c["neck_shadow"])
        _fill(img, body["shirt"], i.shirt)
        if i.collar == "v":
            _fill(img, body["collar"], c["v"])
        elif i.collar == "crew":
            _stroke(img, body["collar"], c["collar"], 2 * self.line_px)
        else:
            _fill(img, body["collar_l"], (238, 238, 234))
            _fill(img, body["collar_r"], (238, 238, 234))

    def _draw_eye(self, img: np.ndarray, p: dict[str, np.ndarray], s: str, openness: float) -> None:
        i, c = self.ident, self.colours
        up, lo = p["lid_up_" + s], p["lid_lo_" + s]
        if openness > 0.08:
            eye = np.vstack([up, lo[::-1]])
            # the iris is clipped to the eye opening inside a small patch
            x0, y0, x1, y1 = _bounds(eye, self.size, 1)
            if x1 - x0 > 2 and y1 - y0 > 2:
                off = np.array([x0, y0], np.int32) << _SHIFT
                patch = img[y0:y1, x0:x1].copy()
                _fill(patch, eye - off, _EYE_WHITE)
                _fill(patch, p["iris_" + s] - off, i.iris)
                _stroke(patch, p["ring_" + s] - off, c["iris_ring"], 1, True)
                _fill(patch, p["pupil_" + s] - off, (14, 10, 10))
                _fill(patch, p["glint_" + s] - off, (250, 250, 250))
                mask = np.zeros(patch.shape[:2], np.uint8)
                _fill(mask, eye - off, 255)
                _blend_into(img, x0, y0, patch, mask)
        _stroke(img, up, _LASH, self.line_px + (1 if self.size >= 192 else 0))
        _stroke(img, p["flick_" + s], _LASH, self.line_px)
        _stroke(img, lo[2:-2], c["lid"], 1)
        _stroke(img, p["crease_" + s], c["crease"], 1)

    def _draw_mouth(self, img: np.ndarray, p: dict[str, np.ndarray], gap_px: float) -> None:
        i, c = self.ident, self.colours
        is_open = gap_px > 0.6
        if is_open:
            _fill(img, np.vstack([p["upper_inner"], p["lower_inner"][::-1]]), _MOUTH_INSIDE)
            _fill(img, p["teeth"], _TEETH)
            if gap_px > 0.33 * MAX_GAP * self.ident.face_scale * self.size:
                _fill(img, p["tongue"], _TONGUE)
        _fill(img, np.vstack([p["upper_outer"], p["upper_inner"][::-1]]), c["upper_lip"])
        _fill(img, np.vstack([p["lower_inner"], p["lower_outer"][::-1]]), i.lips)
        _stroke(img, p["upper_inner"][2:-2] if is_open else p["upper_inner"], c["lip_line"], self.line_px)
        _stroke(img, p["shine"], c["lip_shine"], 1)

    def _draw_hair(self, img: np.ndarray, st: dict[str, np.ndarray]) -> None:
        c = self.colours
        if self.ident.hair_style == "bald":
            for s in ("l", "r"):
                _fill(img, st["bald_" + s], c["bald"])
            return
        _fill(img, st["hair_top"], c["hair"])
        for k in range(7):
            _stroke(img, st[f"strand_{k}"], c["strand"], 1)
        for s in ("l", "r"):
            if "lock_" + s in st:
                _fill(img, st["lock_" + s], c["hair"])

"""Seeded identity parameters of a drawn talking head: face geometry, colours, hair, glasses, backdrop.

Geometry is in face units: the face outline's half width is 1, x points right, y down, the eye
line is y = 0. `Identity.sample(rng, identity_id)` is the one constructor; `to_json()` is what the
manifest records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RGB = tuple[int, int, int]

HAIR_STYLES = ("short", "side_part", "fringe", "curly", "bob", "long", "bun", "buzz", "bald")
GLASSES = ("none", "round", "rect")
BACKGROUNDS = ("solid", "linear", "radial", "stripes", "dots", "checker", "bokeh")

# Skin tones from light to dark; a tone is a random point on this polyline, then jittered.
_SKIN_ANCHORS = np.array(
    [(255, 226, 205), (243, 201, 172), (228, 180, 140), (205, 148, 105),
     (176, 118, 80), (140, 88, 56), (104, 64, 42), (74, 46, 32)], dtype=np.float64)
_IRIS = np.array([(58, 38, 24), (96, 62, 34), (122, 98, 52), (76, 116, 70),
                  (68, 108, 160), (112, 122, 132)], dtype=np.float64)
_IRIS_WEIGHTS = np.array([0.35, 0.25, 0.1, 0.1, 0.12, 0.08])
_HAIR = np.array([(24, 20, 20), (52, 34, 24), (96, 62, 38), (138, 98, 60), (196, 160, 98),
                  (222, 206, 166), (146, 58, 28), (150, 150, 150), (218, 216, 210)], dtype=np.float64)
_HAIR_WEIGHTS = np.array([0.24, 0.2, 0.14, 0.1, 0.1, 0.04, 0.07, 0.06, 0.05])


def _rgb(values) -> RGB:
    return tuple(int(round(min(255.0, max(0.0, v)))) for v in values)  # type: ignore[return-value]


def _hsv_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> RGB:
    h, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return _rgb((255 * r, 255 * g, 255 * b))


def _distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


@dataclass(frozen=True)
class Background:
    kind: str                 # one of BACKGROUNDS
    colour_a: RGB
    colour_b: RGB
    angle_deg: float          # gradient / stripe direction
    period: float             # pattern period as a fraction of the frame size
    seed: int                 # for the bokeh blobs


@dataclass(frozen=True)
class Identity:
    identity_id: str
    # placement: half face width as a fraction of the frame size, face centre (fractions)
    face_scale: float
    centre_x: float
    centre_y: float
    # outline: chin below / forehead top above the eye line, skull top (under the hair), superellipse
    # exponent, jaw taper
    chin_depth: float
    forehead: float
    skull: float
    squareness: float
    jaw_taper: float
    # eyes
    eye_spacing: float
    eye_width: float
    eye_height: float
    eye_tilt: float
    iris_size: float
    # brows
    brow_gap: float
    brow_thickness: float
    brow_arch: float
    brow_length: float
    # nose, mouth, ears
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    upper_lip: float
    lower_lip: float
    ear_size: float
    # colours
    skin: RGB
    lips: RGB
    iris: RGB
    hair: RGB
    brows: RGB
    shirt: RGB
    # hair, glasses, collar
    hair_style: str
    hair_volume: float
    hairline: float
    parting: float
    glasses: str
    glasses_colour: RGB
    collar: str
    # lighting: direction in the camera frame (x right, y down, z to the camera), strength
    light: tuple[float, float, float]
    ambient: float
    blink_rate: float          # blinks per second
    background: Background

    @staticmethod
    def sample(rng: np.random.Generator, identity_id: str) -> "Identity":
        """Draw an identity. The draws' order is part of the corpus: same seed, same identities."""
        u = rng.uniform
        palette = _palette(rng)
        background = _background(rng, palette["skin"], palette["hair"])
        forehead = float(u(0.68, 0.8))
        light = np.array([u(-0.7, 0.7), u(-0.7, 0.05), 1.0])
        light /= np.linalg.norm(light)
        return Identity(
            identity_id=identity_id,
            face_scale=float(u(0.25, 0.275)),
            centre_x=float(u(0.47, 0.53)),
            centre_y=float(u(0.42, 0.45)),
            chin_depth=float(u(1.28, 1.45)),
            forehead=forehead,
            skull=forehead + float(u(0.3, 0.38)),
            squareness=float(u(2.0, 2.7)),
            jaw_taper=float(u(0.1, 0.38)),
            eye_spacing=float(u(0.39, 0.46)),
            eye_width=float(u(0.19, 0.23)),
            eye_height=float(u(0.085, 0.11)),
            eye_tilt=float(u(-0.03, 0.04)),
            iris_size=float(u(0.8, 0.95)),
            brow_gap=float(u(0.19, 0.26)),
            brow_thickness=float(u(0.045, 0.085)),
            brow_arch=float(u(0.02, 0.08)),
            brow_length=float(u(0.42, 0.52)),
            nose_length=float(u(0.42, 0.52)),
            nose_width=float(u(0.15, 0.22)),
            mouth_y=float(u(0.8, 0.88)),
            mouth_width=float(u(0.38, 0.46)),
            upper_lip=float(u(0.06, 0.09)),
            lower_lip=float(u(0.075, 0.115)),
            ear_size=float(u(0.9, 1.15)),
            skin=palette["skin"], lips=palette["lips"], iris=palette["iris"], hair=palette["hair"],
            brows=palette["brows"], shirt=palette["shirt"], hair_style=palette["style"],
            hair_volume=float(u(0.12, 0.28)),
            hairline=-forehead + float(u(0.0, 0.1)),
            parting=float(u(-0.4, 0.4)),
            glasses=palette["glasses"],
            glasses_colour=palette["glasses_colour"],
            collar=str(rng.choice(["crew", "v", "shirt"])),
            light=(float(light[0]), float(light[1]), float(light[2])),
            ambient=float(u(0.42, 0.55)),
            blink_rate=float(u(0.15, 0.45)),
            background=background,
        )

    def to_json(self) -> dict:
        return rounded(asdict(self))


def rounded(value, digits: int = 4):
    """`value` with every float rounded (recursively), tuples as lists: stable, compact JSON."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def _palette(rng: np.random.Generator) -> dict:
    """Skin, lips, iris, hair, brows, hair style, glasses and shirt of one identity."""
    u = rng.uniform
    t = u(0, len(_SKIN_ANCHORS) - 1)
    i0 = int(t)
    i1 = min(i0 + 1, len(_SKIN_ANCHORS) - 1)
    skin_f = _SKIN_ANCHORS[i0] * (1 - (t - i0)) + _SKIN_ANCHORS[i1] * (t - i0)
    skin_f = skin_f * u(0.95, 1.04) + rng.normal(0, 4, 3)
    out = {"skin": _rgb(skin_f),
           "lips": _rgb(skin_f * np.array([0.86, 0.58, 0.6]) + np.array([22, 0, 4]) + rng.normal(0, 6, 3)),
           "iris": _rgb(_IRIS[rng.choice(len(_IRIS), p=_IRIS_WEIGHTS)] + rng.normal(0, 8, 3))}
    if u() < 0.05:  # dyed hair
        out["hair"] = _hsv_colour(rng, (0.45, 0.8), (0.35, 0.75))
    else:
        out["hair"] = _rgb(_HAIR[rng.choice(len(_HAIR), p=_HAIR_WEIGHTS)] * u(0.85, 1.12) + rng.normal(0, 5, 3))
    brightness = float(np.mean(out["hair"]))
    out["brows"] = _rgb(np.asarray(out["hair"], np.float64) * (0.55 if brightness > 110 else 0.85) + 8)
    out["style"] = str(rng.choice(HAIR_STYLES, p=[0.16, 0.14, 0.12, 0.1, 0.12, 0.14, 0.08, 0.08, 0.06]))
    out["glasses"] = str(rng.choice(GLASSES, p=[0.7, 0.15, 0.15]))
    out["glasses_colour"] = _rgb(rng.choice([20, 40, 90, 150]) + rng.normal(0, 10, 3))
    out["shirt"] = _hsv_colour(rng, (0.1, 0.8), (0.15, 0.85))
    return out


def _background(rng: np.random.Generator, skin, hair) -> "Background":
    """A backdrop kept apart from skin and hair in colour, so the face stands out."""
    u = rng.uniform
    kind = str(rng.choice(BACKGROUNDS))
    for _ in range(20):
        colour_a = _hsv_colour(rng, (0.05, 0.7), (0.2, 0.95))
        if _distance(colour_a, skin) > 90 and _distance(colour_a, hair) > 50:
            break
    colour_b = _rgb(np.asarray(colour_a, np.float64) * u(0.55, 0.9) + rng.normal(0, 25, 3))
    return Background(kind, colour_a, colour_b, float(u(0, 180)), float(u(0.06, 0.2)), int(rng.integers(0, 2**31 - 1)))

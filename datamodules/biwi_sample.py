"""Deterministic synthetic BIWI head pose set in the real (fastai) layout.

One folder per "person" (``01``, ``02``, ... and ``13``, the lesson's validation person), each
with ``rgb.cal`` (Kinect-like intrinsics that differ a little per person) and frames
``frame_XXXXX_rgb.jpg`` + ``frame_XXXXX_pose.txt``. Each frame draws a person (head with hair,
eyes, nose, mouth, ears and shoulders) in an office-like scene; the head sits at a random 3D
centre (mm, camera coordinates) with a random rotation, and both are written to ``pose.txt``
as BIWI does. The head's image position is the projection of that centre, its size follows
the depth, and the face features move with yaw and pitch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 640, 480
FX, CX, CY = 517.679, 320.0, 240.5  # person 01's intrinsics in the real data
PERSONS = ("01", "02", "03", "04", "05", "06", "07", "13")


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (angles in radians)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipse(cx, cy, rx, ry, angle=0.0, n=48) -> list[tuple[float, float]]:
    """Polygon of a rotated ellipse (angle in radians)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    ca, sa = np.cos(angle), np.sin(angle)
    return list(zip(cx + ca * x - sa * y, cy + sa * x + ca * y))


def _colour(rng, base, amount=25) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(base, float) + rng.uniform(-amount, amount, 3), 0, 255))


def make_person(rng: np.random.Generator) -> dict:
    """A person's look: skin, hair, shirt, head size (mm), glasses, and camera intrinsics."""
    skins = [(235, 200, 170), (210, 160, 120), (170, 120, 85), (120, 80, 55), (245, 215, 190)]
    hairs = [(40, 30, 20), (90, 60, 30), (200, 170, 110), (20, 20, 20), (130, 130, 130)]
    f = FX * rng.uniform(0.97, 1.03)
    return {
        "skin": _colour(rng, skins[rng.integers(len(skins))], 15),
        "hair": _colour(rng, hairs[rng.integers(len(hairs))], 15),
        "shirt": _colour(rng, (128, 128, 128), 110),
        "head_mm": (rng.uniform(72, 85), rng.uniform(100, 112)),
        "hair_cover": rng.uniform(0.2, 0.4),
        "glasses": bool(rng.random() < 0.35),
        "K": np.array([[f, 0, CX + rng.uniform(-6, 6)], [0, f, CY + rng.uniform(-6, 6)], [0, 0, 1.0]]),
    }


def _background(rng: np.random.Generator) -> Image.Image:
    """Office-like backdrop: a wall gradient, a floor band, furniture and clutter."""
    h, w = HEIGHT, WIDTH
    top, bottom = np.array(_colour(rng, (170, 170, 160), 70), float), np.array(_colour(rng, (120, 115, 110), 60), float)
    t = np.linspace(0, 1, h)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()
    im = Image.fromarray(img.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 8)):  # cupboards, windows, screens, posters
        x0, y0 = rng.uniform(-50, w), rng.uniform(-50, h)
        draw.rectangle([x0, y0, x0 + rng.uniform(30, 260), y0 + rng.uniform(30, 220)], fill=_colour(rng, (128, 128, 128), 120))
    for _ in range(rng.integers(0, 4)):  # round clutter (lamps, plants)
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 45)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_colour(rng, (100, 140, 90), 100))
    return im


def draw_frame(rng: np.random.Generator, person: dict, centre: np.ndarray, angles: tuple[float, float, float]) -> Image.Image:
    """One 640x480 frame with the person's head centred at the projection of ``centre`` (mm)."""
    K = person["K"]
    X, Y, Z = centre
    u, v = X * K[0, 0] / Z + K[0, 2], Y * K[1, 1] / Z + K[1, 2]
    yaw, pitch, roll = angles
    rx, ry = (mm * K[0, 0] / Z for mm in person["head_mm"])
    im = _background(rng)
    draw = ImageDraw.Draw(im)
    # shoulders and neck, below the head, tilting a little with it
    draw.polygon(_ellipse(u + 0.3 * rx * np.sin(roll), v + 2.9 * ry, 2.6 * rx, 1.7 * ry), fill=person["shirt"])
    draw.polygon(_ellipse(u, v + 1.05 * ry, 0.45 * rx, 0.5 * ry), fill=person["skin"])

    def at(dx: float, dy: float) -> tuple[float, float]:  # head-relative point, rotated by roll
        return u + np.cos(roll) * dx - np.sin(roll) * dy, v + np.sin(roll) * dx + np.cos(roll) * dy

    # ears, head, hair cap
    ear_shift = -np.sin(yaw) * rx * 0.5
    for side in (-1, 1):
        ex, ey = at(side * rx * 0.98 + ear_shift, 0.05 * ry)
        draw.polygon(_ellipse(ex, ey, 0.16 * rx, 0.26 * ry, roll), fill=person["skin"])
    draw.polygon(_ellipse(u, v, rx, ry, roll), fill=person["skin"])
    cover = person["hair_cover"]
    hx, hy = at(-np.sin(yaw) * rx * 0.25, -ry * (1 - cover) - 0.12 * ry)
    draw.polygon(_ellipse(hx, hy, rx * 1.04, ry * cover + 0.12 * ry, roll), fill=person["hair"])
    # face features follow yaw (sideways) and pitch (up/down)
    fx, fy = np.sin(yaw) * rx * 0.75, np.sin(pitch) * ry * 0.55
    squeeze = max(0.35, np.cos(yaw))
    eye_r = 0.13 * rx
    for side in (-1, 1):
        ex, ey = at(fx + side * 0.38 * rx * squeeze, fy - 0.12 * ry)
        draw.polygon(_ellipse(ex, ey, eye_r * 1.3, eye_r, roll), fill=(245, 245, 245))
        draw.polygon(_ellipse(ex + 0.3 * eye_r * np.sin(yaw), ey, eye_r * 0.6, eye_r * 0.6), fill=(40, 30, 25))
        if person["glasses"]:
            draw.polygon(_ellipse(ex, ey, eye_r * 2.0, eye_r * 1.6, roll), outline=(20, 20, 20), width=max(1, int(eye_r * 0.25)))
    nx, ny = at(fx * 1.25, fy + 0.15 * ry)
    shade = tuple(int(c * 0.8) for c in person["skin"])
    draw.polygon(_ellipse(nx, ny, 0.1 * rx, 0.18 * ry, roll), fill=shade)
    mx, my = at(fx * 1.1, fy + 0.5 * ry)
    draw.polygon(_ellipse(mx, my, 0.3 * rx * squeeze, 0.07 * ry, roll), fill=(150, 60, 60))
    # soft focus, lighting and sensor noise
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    arr = np.asarray(im, float) * rng.uniform(0.65, 1.25) + rng.uniform(-25, 25)
    arr += rng.normal(0, 5, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_cal(path: Path, K: np.ndarray) -> None:
    """``rgb.cal`` as BIWI writes it: intrinsics, distortion, extrinsic rotation and translation."""
    rows = [" ".join(f"{v:g}" for v in r) + " " for r in K]
    path.write_text("\n".join([*rows, "", "0 0 0 0 ", "", "1 0 0 ", "0 1 0 ", "0 0 1 ", "", "0 0 0 "]) + "\n")


def write_pose(path: Path, R: np.ndarray, centre: np.ndarray) -> None:
    """``frame_XXXXX_pose.txt``: the head rotation (3 lines) and its centre in mm (last line)."""
    rows = [" ".join(f"{v:g}" for v in r) + " " for r in R]
    path.write_text("\n".join([*rows, "", " ".join(f"{v:g}" for v in centre) + " "]) + "\n")


def write_biwi_sample(folder: Path, persons=PERSONS, frames: int = 40, seed: int = 0) -> None:
    """Write ``frames`` frames for each person in the fastai BIWI layout under ``folder``."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for name in persons:
        person = make_person(rng)
        pdir = folder / name
        pdir.mkdir(parents=True, exist_ok=True)
        write_cal(pdir / "rgb.cal", person["K"])
        frame = int(rng.integers(3, 20))
        for _ in range(frames):
            Z = rng.uniform(750, 1150)
            # keep the head (and a margin) inside the picture
            max_x = (WIDTH / 2 - 60) * Z / person["K"][0, 0] - 80
            max_y = (HEIGHT / 2 - 60) * Z / person["K"][1, 1] - 100
            centre = np.array([rng.uniform(-max_x, max_x), rng.uniform(-max_y, max_y * 0.8), Z])
            angles = (np.radians(rng.uniform(-50, 50)), np.radians(rng.uniform(-25, 25)), np.radians(rng.uniform(-15, 15)))
            stem = pdir / f"frame_{frame:05d}"
            draw_frame(rng, person, centre, angles).save(f"{stem}_rgb.jpg", quality=88)
            write_pose(Path(f"{stem}_pose.txt"), rotation(*angles), centre)
            frame += int(rng.integers(1, 4))

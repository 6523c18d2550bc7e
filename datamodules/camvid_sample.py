"""Deterministic synthetic CamVid in the fastai layout: street-like scenes with the real 32 codes.

Scenes have a sky, buildings with windows, trees, a road in perspective with lane marks,
pavements, cars, pedestrians, poles with signs and a few void pixels; colours, layout,
lighting and noise vary per image so that the task is learnable but not trivial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CAMVID_CODES = [
    "Animal", "Archway", "Bicyclist", "Bridge", "Building", "Car", "CartLuggagePram", "Child",
    "Column_Pole", "Fence", "LaneMkgsDriv", "LaneMkgsNonDriv", "Misc_Text", "MotorcycleScooter",
    "OtherMoving", "ParkingBlock", "Pedestrian", "Road", "RoadShoulder", "Sidewalk", "SignSymbol",
    "Sky", "SUVPickupTruck", "TrafficCone", "TrafficLight", "Train", "Tree", "Truck_Bus", "Tunnel",
    "VegetationMisc", "Void", "Wall",
]
C = {name: i for i, name in enumerate(CAMVID_CODES)}


def _jitter(rng, rgb, amount=25):
    return np.clip(np.asarray(rgb, float) + rng.uniform(-amount, amount, 3), 0, 255)


def _rect(img, lab, y0, y1, x0, x1, color, cls, rng=None, texture=0.0):
    h, w = lab.shape
    y0, y1, x0, x1 = max(0, int(y0)), min(h, int(y1)), max(0, int(x0)), min(w, int(x1))
    if y1 <= y0 or x1 <= x0:
        return
    patch = np.broadcast_to(np.asarray(color, float), (y1 - y0, x1 - x0, 3)).copy()
    if texture and rng is not None:
        patch += rng.normal(0, texture, patch.shape[:2])[..., None]
    img[y0:y1, x0:x1] = patch
    lab[y0:y1, x0:x1] = cls


def _ellipse(img, lab, cy, cx, ry, rx, color, cls, rng=None, texture=0.0):
    h, w = lab.shape
    yy, xx = np.ogrid[:h, :w]
    m = ((yy - cy) / max(ry, 1e-3)) ** 2 + ((xx - cx) / max(rx, 1e-3)) ** 2 <= 1
    col = np.asarray(color, float)
    if texture and rng is not None:
        img[m] = col + rng.normal(0, texture, (int(m.sum()), 1))
    else:
        img[m] = col
    lab[m] = cls


def make_scene(rng: np.random.Generator, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (RGB uint8 HxWx3, class ids uint8 HxW)."""
    img = np.zeros((h, w, 3), float)
    lab = np.zeros((h, w), np.uint8)
    horizon = int(rng.uniform(0.38, 0.55) * h)
    # sky: vertical gradient
    top, bottom = _jitter(rng, (90, 140, 210), 30), _jitter(rng, (190, 205, 225), 20)
    t = np.linspace(0, 1, horizon)[:, None, None]
    img[:horizon] = top * (1 - t) + bottom * t
    lab[:horizon] = C["Sky"]
    # ground: road trapezoid to a vanishing point, pavements either side
    vx = rng.uniform(0.35, 0.65) * w
    _rect(img, lab, horizon, h, 0, w, _jitter(rng, (150, 150, 140)), C["Sidewalk"], rng, 6)
    ys = np.arange(horizon, h)
    frac = (ys - horizon + 1) / (h - horizon)
    half = frac * rng.uniform(0.45, 0.7) * w
    road_col = _jitter(rng, (85, 80, 90), 15)
    for y, f, hw in zip(ys, frac, half):
        x0, x1 = int(max(0, vx - hw)), int(min(w, vx + hw))
        img[y, x0:x1] = road_col + rng.normal(0, 4, (x1 - x0, 1))
        lab[y, x0:x1] = C["Road"]
        # dashed centre line
        if (int(f * 12 + rng.uniform(0, 0.02)) % 2 == 0) and f > 0.08:
            lw = max(1, int(f * 3))
            img[y, int(vx - lw): int(vx + lw)] = (235, 235, 225)
            lab[y, int(vx - lw): int(vx + lw)] = C["LaneMkgsDriv"]
    # buildings along the horizon, with windows
    x = rng.uniform(-10, 5)
    while x < w:
        bw = rng.uniform(15, 40)
        btop = rng.uniform(0.05, 0.7) * horizon
        col = _jitter(rng, rng.choice([(150, 90, 70), (170, 160, 140), (120, 110, 105), (200, 185, 150)]), 20)
        bottom_y = horizon + rng.uniform(0, 4)
        _rect(img, lab, btop, bottom_y, x, x + bw, col, C["Building"], rng, 5)
        win = col * 0.45
        for wy in np.arange(btop + 3, bottom_y - 4, 7):
            for wx in np.arange(x + 3, x + bw - 3, 6):
                if rng.random() < 0.8:
                    y0, x0 = int(wy), int(wx)
                    img[max(0, y0): y0 + 3, max(0, x0): x0 + 3] = win
        x += bw + rng.uniform(-2, 6)
    # trees in front of buildings
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.uniform(0, w), horizon - rng.uniform(5, 20)
        r = rng.uniform(6, 14)
        _rect(img, lab, cy, horizon + 3, cx - 1.5, cx + 1.5, (90, 60, 40), C["Tree"])
        _ellipse(img, lab, cy, cx, r, r * rng.uniform(0.8, 1.3), _jitter(rng, (60, 120, 50), 20), C["Tree"], rng, 12)
    # poles with signs
    for _ in range(rng.integers(0, 3)):
        px = rng.uniform(0, w)
        ptop = rng.uniform(0.1, 0.5) * horizon
        pbot = horizon + rng.uniform(5, (h - horizon) * 0.6)
        _rect(img, lab, ptop, pbot, px - 1, px + 1, _jitter(rng, (70, 70, 70), 10), C["Column_Pole"])
        if rng.random() < 0.6:
            _rect(img, lab, ptop, ptop + 6, px - 4, px + 4, _jitter(rng, (200, 30, 30), 30), C["SignSymbol"])
    # cars on the road, nearer ones bigger
    for _ in range(rng.integers(0, 4)):
        f = rng.uniform(0.15, 0.9)
        cy = horizon + f * (h - horizon)
        cw, ch = 10 + 45 * f, 6 + 22 * f
        cx = vx + rng.uniform(-1, 1) * f * 0.5 * w
        col = _jitter(rng, rng.choice([(180, 20, 20), (20, 40, 160), (30, 30, 30), (220, 220, 220), (200, 180, 20)]), 20)
        _rect(img, lab, cy - ch, cy, cx - cw / 2, cx + cw / 2, col, C["Car"], rng, 4)
        _rect(img, lab, cy - ch, cy - ch * 0.55, cx - cw / 3, cx + cw / 3, (60, 80, 100), C["Car"])  # windows
    # pedestrians on the pavement
    for _ in range(rng.integers(0, 4)):
        f = rng.uniform(0.1, 0.8)
        py = horizon + f * (h - horizon)
        ph = 10 + 25 * f
        px = rng.choice([rng.uniform(0, 0.2), rng.uniform(0.8, 1.0)]) * w
        _ellipse(img, lab, py - ph / 2, px, ph / 2, ph / 7, _jitter(rng, (60, 50, 90), 40), C["Pedestrian"])
        _ellipse(img, lab, py - ph, px, ph / 9, ph / 9, (210, 170, 140), C["Pedestrian"])
    # void: a few unlabelled blobs (ego-vehicle bonnet edge, clutter)
    if rng.random() < 0.5:
        _rect(img, lab, h - rng.uniform(2, 7), h, 0, w, (20, 20, 20), C["Void"])
    for _ in range(rng.integers(0, 2)):
        _ellipse(img, lab, rng.uniform(0, h), rng.uniform(0, w), 3, 4, _jitter(rng, (120, 120, 120), 60), C["Void"])
    # lighting and sensor noise
    img = img * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def write_camvid_sample(folder: Path, n: int = 200, n_valid: int = 40, size: tuple[int, int] = (96, 128), seed: int = 0) -> None:
    """Write ``n`` scenes in the fastai CamVid layout (``images/``, ``labels/``, ``codes.txt``, ``valid.txt``)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    (folder / "codes.txt").write_text("\n".join(CAMVID_CODES) + "\n")
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        img, lab = make_scene(rng, *size)
        name = f"synth_{i:04d}"
        Image.fromarray(img).save(folder / "images" / f"{name}.png")
        Image.fromarray(lab, mode="L").save(folder / "labels" / f"{name}_P.png")
        names.append(f"{name}.png")
    (folder / "valid.txt").write_text("\n".join(names[-n_valid:]) + "\n")

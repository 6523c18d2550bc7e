"""Deterministic synthetic Planet in the fastai layout (``labels.csv`` + ``train/<name>.jpg``).

Each image is a 128 px "satellite" tile whose 17 Kaggle tags have visible correlates: dark
textured rainforest (``primary``), striped fields (``agriculture``), small clearings
(``cultivation``), thin bright lines (``road``), a winding blue river or a lake (``water``),
clusters of roofs (``habitation``), sand (``bare_ground``), fishbone tracks
(``selective_logging``), pink specks (``blooming``), black scars with smoke (``slash_burn``),
terraced pits (``conventional_mine``), orange pools by the river (``artisinal_mine``) and pale
streaks (``blow_down``). Exactly one weather tag per image, as in the real data: ``clear``,
``haze`` (a grey veil), ``partly_cloudy`` (white blobs with shadows) or ``cloudy`` (overcast,
no ground tags). Rare tags are more common than in the real data so that a few hundred
images contain them all. The JPEGs are written in CMYK, like the real ones.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

# (tag, probability given a clear/hazy/partly cloudy sky); weather is drawn separately
WEATHER = (("clear", 0.6), ("partly_cloudy", 0.2), ("haze", 0.12), ("cloudy", 0.08))
GROUND = {
    "primary": 0.85, "agriculture": 0.35, "road": 0.3, "water": 0.25, "cultivation": 0.15,
    "habitation": 0.12, "bare_ground": 0.07, "selective_logging": 0.06, "blooming": 0.06,
    "slash_burn": 0.05, "artisinal_mine": 0.05, "conventional_mine": 0.04, "blow_down": 0.05,
}
FOREST_ONLY = ("selective_logging", "blooming", "blow_down")


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bilinearly."""
    n = size // cell + 2
    coarse = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size + 2 * cell, size + 2 * cell), Image.BILINEAR)
    off = rng.integers(0, cell, 2)
    return np.asarray(img)[off[0] : off[0] + size, off[1] : off[1] + size]


def _blob(rng: np.random.Generator, size: int, cy: float, cx: float, ry: float, rx: float, wobble: float = 0.3) -> np.ndarray:
    """A boolean irregular ellipse (its radius wobbles with the angle)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    ang = np.arctan2(yy - cy, xx - cx)
    k = rng.uniform(0, 2 * np.pi, 3)
    r = 1 + wobble * (0.5 * np.sin(2 * ang + k[0]) + 0.3 * np.sin(3 * ang + k[1]) + 0.2 * np.sin(5 * ang + k[2]))
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= r**2


def _paint(img: np.ndarray, mask: np.ndarray, rgb, rng: np.random.Generator, jitter: float = 15, texture: float = 6) -> None:
    col = np.clip(np.asarray(rgb, np.float32) + rng.uniform(-jitter, jitter, 3), 0, 255)
    k = int(mask.sum())
    if k:
        img[mask] = col + rng.normal(0, texture, (k, 1)).astype(np.float32)


def _line(size: int, p0, p1, width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the segment p0-p1 (points as (y, x))."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
    return (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= (width / 2) ** 2


def _polyline(size: int, points, width: float) -> np.ndarray:
    m = np.zeros((size, size), bool)
    for a, b in zip(points[:-1], points[1:]):
        m |= _line(size, a, b, width)
    return m


def _edge_points(rng: np.random.Generator, size: int, n: int = 4, bend: float = 0.25):
    """A path crossing the tile from one side to the other, with ``n`` segments."""
    if rng.random() < 0.5:
        ys = np.linspace(-4, size + 4, n + 1)
        xs = rng.uniform(0.2, 0.8) * size + np.cumsum(rng.normal(0, bend * size / n, n + 1))
    else:
        xs = np.linspace(-4, size + 4, n + 1)
        ys = rng.uniform(0.2, 0.8) * size + np.cumsum(rng.normal(0, bend * size / n, n + 1))
    return list(zip(ys, xs))


def draw_tags(rng: np.random.Generator) -> list[str]:
    """One weather tag, then ground tags with the real data's dependencies."""
    names, probs = zip(*WEATHER)
    weather = str(rng.choice(names, p=np.asarray(probs) / sum(probs)))
    if weather == "cloudy":
        return [weather]
    tags = [weather] + [t for t, p in GROUND.items() if rng.random() < p]
    if "primary" not in tags:
        tags = [t for t in tags if t not in FOREST_ONLY]
    if "habitation" in tags and "road" not in tags and rng.random() < 0.7:
        tags.append("road")
    if "artisinal_mine" in tags and "water" not in tags and rng.random() < 0.8:
        tags.append("water")
    if len(tags) == 1:  # a bare tile would be unlabelled land: make it forest
        tags.append("primary")
    return sorted(tags)


def make_tile(rng: np.random.Generator, tags: list[str], size: int = 128) -> np.ndarray:
    """An RGB uint8 tile showing ``tags``."""
    s = size
    has = set(tags).__contains__
    forest = has("primary")
    base = (34, 72, 38) if forest else (150, 150, 95)
    img = np.empty((s, s, 3), np.float32)
    img[:] = np.asarray(base, np.float32) + rng.uniform(-10, 10, 3)
    img += 18 * _smooth_noise(rng, s, 16)[..., None] + 7 * _smooth_noise(rng, s, 4)[..., None]
    if not forest:  # small remnant of trees only
        for _ in range(rng.integers(0, 3)):
            _paint(img, _blob(rng, s, *rng.uniform(0, s, 2), *rng.uniform(4, 8, 2)), (45, 80, 45), rng, 8, 8)
    if has("blow_down"):
        cy, cx, ang = *rng.uniform(0.25, 0.75, 2) * s, rng.uniform(0, np.pi)
        ln = rng.uniform(0.25, 0.4) * s
        p0, p1 = (cy - ln * np.sin(ang), cx - ln * np.cos(ang)), (cy + ln * np.sin(ang), cx + ln * np.cos(ang))
        _paint(img, _line(s, p0, p1, rng.uniform(7, 11)), (95, 135, 70), rng, 10, 10)
    if has("agriculture"):
        for _ in range(rng.integers(2, 5)):
            h, w = rng.uniform(0.18, 0.4, 2) * s
            y0, x0 = rng.uniform(-0.1, 0.8, 2) * s
            yy, xx = np.mgrid[:s, :s]
            m = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
            _paint(img, m, rng.choice([(170, 185, 100), (195, 190, 120), (140, 175, 85)]), rng, 15, 3)
            stripes = m & (((xx if rng.random() < 0.5 else yy) // 3) % 2 == 0)
            img[stripes] *= 0.88
    if has("cultivation"):
        for _ in range(rng.integers(3, 6)):
            _paint(img, _blob(rng, s, *rng.uniform(0.1, 0.9, 2) * s, *rng.uniform(3.5, 7, 2), 0.5), (125, 115, 70), rng, 12, 6)
    if has("bare_ground"):
        for _ in range(rng.integers(1, 3)):
            _paint(img, _blob(rng, s, *rng.uniform(0.15, 0.85, 2) * s, *rng.uniform(9, 16, 2), 0.45), (190, 150, 105), rng, 12, 8)
    if has("conventional_mine"):
        cy, cx = rng.uniform(0.3, 0.7, 2) * s
        r = rng.uniform(14, 20)
        for i, col in enumerate([(175, 160, 130), (140, 125, 105), (110, 100, 90)]):
            _paint(img, _blob(rng, s, cy, cx, r * (1 - 0.3 * i), r * 1.3 * (1 - 0.3 * i), 0.1), col, rng, 5, 3)
    if has("slash_burn"):
        cy, cx = rng.uniform(0.2, 0.8, 2) * s
        _paint(img, _blob(rng, s, cy, cx, *rng.uniform(6, 11, 2), 0.4), (35, 30, 28), rng, 6, 5)
        smoke = _blob(rng, s, cy - 8, cx + 8, 7, 14, 0.3)
        img[smoke] = 0.5 * img[smoke] + 0.5 * np.float32(200)
    if has("water"):
        col = (35, 65, 115)
        if rng.random() < 0.7:
            river = _polyline(s, _edge_points(rng, s, 6, 0.35), rng.uniform(4, 9))
        else:
            river = _blob(rng, s, *rng.uniform(0.25, 0.75, 2) * s, *rng.uniform(10, 18, 2), 0.3)
        _paint(img, river, col, rng, 10, 4)
        water_px = np.argwhere(river)
    else:
        water_px = np.empty((0, 2))
    if has("artisinal_mine"):
        centres = water_px[rng.integers(0, len(water_px), 4)] if len(water_px) else rng.uniform(0.2, 0.8, (4, 2)) * s
        for cy, cx in centres:
            _paint(img, _blob(rng, s, cy + rng.normal(0, 5), cx + rng.normal(0, 5), *rng.uniform(2.5, 4.5, 2), 0.3), (215, 155, 75), rng, 12, 6)
    if has("selective_logging"):
        pts = _edge_points(rng, s, 3, 0.1)
        track = _polyline(s, pts, 1.6)
        for _ in range(6):
            (y0, x0), (y1, x1) = pts[rng.integers(0, len(pts) - 1)], pts[-1]
            t = rng.uniform(0.1, 0.9)
            py, px = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
            ang = np.arctan2(y1 - y0, x1 - x0) + np.pi / 2 * rng.choice([-1, 1])
            ln = rng.uniform(8, 16)
            track |= _line(s, (py, px), (py + ln * np.sin(ang), px + ln * np.cos(ang)), 1.4)
        _paint(img, track, (150, 125, 85), rng, 10, 4)
    if has("road"):
        road = np.zeros((s, s), bool)
        for _ in range(rng.integers(1, 3)):
            road |= _polyline(s, _edge_points(rng, s, 3, 0.15), rng.uniform(2, 3))
        _paint(img, road, (200, 180, 150), rng, 12, 4)
    if has("habitation"):
        cy, cx = rng.uniform(0.25, 0.75, 2) * s
        for _ in range(rng.integers(12, 30)):
            y, x = int(cy + rng.normal(0, 8)), int(cx + rng.normal(0, 8))
            col = np.asarray(rng.choice([(235, 230, 225), (200, 90, 70), (215, 215, 200)]), np.float32)
            img[max(0, y) : max(0, y + 3), max(0, x) : max(0, x + 3)] = col
    if has("blooming"):
        cy, cx = rng.uniform(0.2, 0.8, 2) * s
        k = rng.integers(25, 50)
        ys = np.clip(rng.normal(cy, 14, k), 0, s - 2).astype(int)
        xs = np.clip(rng.normal(cx, 14, k), 0, s - 2).astype(int)
        for y, x in zip(ys, xs):
            img[y : y + 2, x : x + 2] = (215, 150, 200)
    # weather on top
    if has("haze"):
        veil = np.asarray((175, 180, 192), np.float32)
        a = rng.uniform(0.35, 0.55)
        img = (1 - a) * img + a * veil
    elif has("partly_cloudy") or has("cloudy"):
        if has("cloudy"):
            cover = np.clip(0.85 + 0.25 * _smooth_noise(rng, s, 32), 0.6, 1.0)
        else:
            cover = np.zeros((s, s), np.float32)
            for _ in range(rng.integers(1, 4)):
                blob = _blob(rng, s, *rng.uniform(0, s, 2), *rng.uniform(12, 28, 2), 0.4).astype(np.float32)
                cover = np.maximum(cover, blob)
            cover = np.asarray(Image.fromarray(cover * 255).convert("L").resize((s // 4, s // 4), Image.BILINEAR).resize((s, s), Image.BILINEAR), np.float32) / 255
            shadow = np.roll(cover, (int(rng.integers(4, 9)), int(rng.integers(4, 9))), (0, 1))
            img *= (1 - 0.45 * shadow)[..., None]
        cloud = np.float32(230) + 12 * _smooth_noise(rng, s, 8)[..., None]
        img = (1 - cover[..., None]) * img + cover[..., None] * cloud
    # sun and sensor
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_planet_sample(folder: Path, n: int = 600, size: int = 128, seed: int = 0) -> None:
    """Write ``n`` tiles in the fastai Planet layout: ``labels.csv`` and ``train/<image_name>.jpg``."""
    folder = Path(folder)
    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = draw_tags(rng)
        name = f"train_{i}"
        Image.fromarray(make_tile(rng, tags, size)).convert("CMYK").save(folder / "train" / f"{name}.jpg", quality=90)
        rows.append((name, " ".join(tags)))
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "tags"])
        w.writerows(rows)

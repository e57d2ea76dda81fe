"""Deterministic synthetic factory surface-inspection images.

Five classes (see :data:`LABELS`): a defect-free surface and four defect types
rendered on procedurally textured metal / plastic surfaces with lighting
variation and sensor noise.

Every image ``i`` of ``generate(seed, count)`` is produced from
``np.random.default_rng([seed, i])`` alone, so a sample never depends on
``count`` and the same ``(seed, i)`` always yields the same pixels.

Bit-exact reproducibility across x86 CPUs (the images' sha256 is recorded as a
dataset fingerprint) is the reason for the restricted toolbox used here: only
rng draws, elementwise ``+ - * /``, ``sqrt``, ``abs``, ``min``/``max``,
``floor``/``clip``, comparisons and integer indexing touch image-sized arrays.
Those are correctly rounded IEEE operations whatever SIMD path numpy takes.
Transcendental functions are only evaluated on a few Python scalars, which
are rounded to 1e-6 before use; soft falloffs are rational functions and
smooth textures are bilinear value noise. No float reductions feed pixels.

This module depends on numpy only (it is imported at runtime by edgeds).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

__all__ = ["LABELS", "fingerprint", "generate", "render", "render_with_region"]

LABELS: tuple[str, ...] = ("ok", "scratch", "pit", "crack", "stain")

_F = np.float32
_Arr = npt.NDArray[np.float32]
_Box = tuple[slice, slice]
_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) as float32 [size, size], cached."""
    g = _GRIDS.get(size)
    if g is None:
        ax = np.arange(size, dtype=np.float32)
        yy = np.repeat(ax[:, None], size, axis=1)
        xx = np.repeat(ax[None, :], size, axis=0)
        yy.setflags(write=False)
        xx.setflags(write=False)
        g = (yy, xx)
        _GRIDS[size] = g
    return g


def _s(v: float) -> np.float32:
    """A Python scalar rounded to 1e-6, as float32 (safe to mix into arrays)."""
    out: np.float32 = np.float32(round(float(v), 6))
    return out


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _dir(angle: float) -> tuple[float, float]:
    """(cos, sin) of a scalar angle, rounded so libm differences cannot leak."""
    return round(math.cos(angle), 6), round(math.sin(angle), 6)


def _interp_axis(n: int, cells: int, smooth: bool) -> tuple[np.ndarray, np.ndarray]:
    pos = (np.arange(n, dtype=np.float32) + _F(0.5)) * _s(cells / n)
    i0 = np.minimum(np.floor(pos).astype(np.intp), cells - 1)
    f = pos - i0.astype(np.float32)
    if smooth:
        f = f * f * (_F(3.0) - _F(2.0) * f)
    return i0, f


def _value_noise(rng: np.random.Generator, h: int, w: int, cy: int, cx: int, smooth: bool = True) -> np.ndarray:
    """Bilinear (smoothstep) value noise in [0, 1): a (cy+1)x(cx+1) grid upsampled."""
    g = rng.random((cy + 1, cx + 1), dtype=np.float32)
    ix, fx = _interp_axis(w, cx, smooth)
    iy, fy = _interp_axis(h, cy, smooth)
    a = g[:, ix]
    b = g[:, ix + 1]
    rows = a + (b - a) * fx[None, :]
    top = rows[iy, :]
    bot = rows[iy + 1, :]
    out: _Arr = top + (bot - top) * fy[:, None]
    return out


def _noise_1d(rng: np.random.Generator, coord: np.ndarray, lo: float, hi: float, period: float) -> np.ndarray:
    """Linear-interpolated 1-D value noise evaluated at an arbitrary coordinate field."""
    n = math.ceil((hi - lo) / period) + 2
    tab = rng.random(n, dtype=np.float32) - _F(0.5)
    p = (coord - _s(lo)) * _s(1.0 / period)
    p = np.clip(p, _F(0.0), _F(n - 1.001))
    i0 = np.floor(p)
    f = p - i0
    i0 = i0.astype(np.intp)
    a = tab[i0]
    out: _Arr = a + (tab[i0 + 1] - a) * f
    return out


def _box(y0: float, x0: float, y1: float, x1: float, size: int, margin: float) -> _Box | None:
    """Pixel window around a segment's bounding box plus margin, clipped to the image."""
    ya = max(0, math.floor(min(y0, y1) - margin))
    yb = min(size, math.ceil(max(y0, y1) + margin) + 1)
    xa = max(0, math.floor(min(x0, x1) - margin))
    xb = min(size, math.ceil(max(x0, x1) + margin) + 1)
    if ya >= yb or xa >= xb:
        return None
    return slice(ya, yb), slice(xa, xb)


def _seg_d2(Y: np.ndarray, X: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance from each (Y, X) to segment (y0,x0)-(y1,x1), and the param t."""
    y0, x0, y1, x1 = (round(v, 6) for v in (y0, x0, y1, x1))
    dy, dx = y1 - y0, x1 - x0
    l2 = max(dy * dy + dx * dx, 1e-6)
    ry = Y - _s(y0)
    rx = X - _s(x0)
    t = np.clip((ry * _s(dy) + rx * _s(dx)) * _s(1.0 / l2), _F(0.0), _F(1.0))
    py = ry - t * _s(dy)
    px = rx - t * _s(dx)
    return py * py + px * px, t


# --------------------------------------------------------------------------- surfaces


def _surface(rng: np.random.Generator, size: int) -> tuple[_Arr, np.ndarray, int, float | None]:
    """Returns (shade [S,S] around 1.0, colour (3,), material id, brushing angle or None)."""
    yy, xx = _grid(size)
    material = int(rng.integers(0, 3))  # 0 brushed metal, 1 plastic, 2 blasted/cast metal
    if material == 1:
        col = rng.uniform(0.15, 0.85, 3)
        m = (col[0] + col[1] + col[2]) / 3.0
        col = m + (col - m) * rng.uniform(0.2, 1.0)
        if rng.random() < 0.25:  # near-black / near-white moulded parts
            col = col * 0.35 + (0.08 if rng.random() < 0.5 else 0.55)
    else:
        g = rng.uniform(0.32, 0.72)
        col = g + rng.uniform(-0.04, 0.04, 3)
    col = np.clip(col, 0.05, 0.92)

    # low-frequency mottling common to every material
    shade = _F(1.0) + (_value_noise(rng, size, size, 3, 3) - _F(0.5)) * _s(_u(rng, 0.04, 0.16))
    shade = shade + (_value_noise(rng, size, size, 9, 9) - _F(0.5)) * _s(_u(rng, 0.01, 0.06))

    brush = None
    if material == 0:
        brush = _u(rng, 0.0, math.pi)
        c, s = _dir(brush)
        # coordinate across the brushing direction, and along it
        across = yy * _s(c) - xx * _s(s)
        along = xx * _s(c) + yy * _s(s)
        lo, hi = -size * 1.5, size * 1.5
        streak = _noise_1d(rng, across, lo, hi, _u(rng, 0.7, 1.6)) * _s(_u(rng, 0.06, 0.2))
        streak = streak + _noise_1d(rng, across, lo, hi, _u(rng, 3.0, 8.0)) * _s(_u(rng, 0.02, 0.08))
        fade = _F(0.6) + _F(0.8) * _noise_1d(rng, along, lo, hi, _u(rng, 25.0, 70.0))
        shade = shade + streak * fade
        shade = shade + (rng.random((size, size), dtype=np.float32) - _F(0.5)) * _s(_u(rng, 0.0, 0.05))
    elif material == 1:
        grain = rng.random((size + 1, size + 1), dtype=np.float32)
        grain = (grain[:-1, :-1] + grain[1:, :-1] + grain[:-1, 1:] + grain[1:, 1:]) * _F(0.25)
        shade = shade + (grain - _F(0.5)) * _s(_u(rng, 0.04, 0.14))
        peel = int(rng.integers(14, 30))
        shade = shade + (_value_noise(rng, size, size, peel, peel) - _F(0.5)) * _s(_u(rng, 0.01, 0.05))
    else:
        fine = rng.random((size, size), dtype=np.float32) - _F(0.5)
        shade = shade + fine * _s(_u(rng, 0.05, 0.16))
        cells = int(rng.integers(25, 45))
        shade = shade + (_value_noise(rng, size, size, cells, cells, smooth=False) - _F(0.5)) * _s(_u(rng, 0.03, 0.09))
    return shade, col, material, brush


def _lighting(rng: np.random.Generator, size: int, material: int) -> tuple[_Arr, _Arr | None]:
    """Multiplicative illumination [S,S] and an additive specular band [S,S]."""
    yy, xx = _grid(size)
    h = size * 0.5
    gy = _u(rng, -0.35, 0.35) / size
    gx = _u(rng, -0.35, 0.35) / size
    light = _F(1.0) + (yy - _s(h)) * _s(gy) + (xx - _s(h)) * _s(gx)
    vy, vx = _u(rng, 0.2, 0.8) * size, _u(rng, 0.2, 0.8) * size
    r2 = (_u(rng, 0.6, 1.5) * size) ** 2
    dy = yy - _s(vy)
    dx = xx - _s(vx)
    vig = _F(1.0) / (_F(1.0) + (dy * dy + dx * dx) * _s(1.0 / r2))
    a = _u(rng, 0.0, 0.45)
    light = light * (_s(1.0 - a) + _s(a) * vig)
    light = light * _s(_u(rng, 0.8, 1.2))

    spec = None
    if rng.random() < (0.7 if material == 0 else 0.35):
        c, s = _dir(_u(rng, 0.0, math.pi))
        off = _u(rng, -0.45, 0.45) * size
        d = (yy - _s(h)) * _s(c) - (xx - _s(h)) * _s(s) - _s(off)
        w2 = (_u(rng, 6.0, 30.0)) ** 2
        spec = _s(_u(rng, 0.03, 0.22)) / (_F(1.0) + d * d * _s(1.0 / w2))
    return light, spec


# --------------------------------------------------------------------------- defects


def _mark(region: np.ndarray | None, box: _Box, strength: np.ndarray) -> None:
    """Record where a defect is (max-combined strength in [0, 1]); no rng draws."""
    if region is not None:
        np.maximum(region[box], np.minimum(strength, _F(1.0)), out=region[box])


def _scratch(
    rng: np.random.Generator, shade: np.ndarray, size: int, brush: float | None, region: np.ndarray | None = None
) -> None:
    yy, xx = _grid(size)
    n = 1 if rng.random() < 0.8 else 2
    # on brushed metal: at least ~17 degrees off the brushing direction
    ang = _u(rng, 0.0, math.pi) if brush is None else brush + _u(rng, 0.3, math.pi - 0.3)
    for k in range(n):
        length = _u(rng, 0.35, 0.9) * size
        if k:
            ang += _u(rng, -0.15, 0.15)
        c, s = _dir(ang)
        cy, cx = _u(rng, 0.2, 0.8) * size, _u(rng, 0.2, 0.8) * size
        y0, x0 = cy - s * length / 2, cx - c * length / 2
        y1, x1 = cy + s * length / 2, cx + c * length / 2
        w = _u(rng, 0.7, 1.6)
        box = _box(y0, x0, y1, x1, size, 4 * w + 3)
        if box is None:
            continue
        Y, X = yy[box], xx[box]
        d2, t = _seg_d2(Y, X, y0, x0, y1, x1)
        q = _F(1.0) / (_F(1.0) + d2 * _s(1.0 / (w * w)))
        prof = q * q
        taper = np.minimum(np.minimum(t, _F(1.0) - t) * _s(_u(rng, 4.0, 12.0)), _F(1.0))
        wob = _F(0.75) + _F(0.5) * _value_noise(rng, Y.shape[0], Y.shape[1], 3, 3)
        amp = _u(rng, 0.15, 0.35) * (1.0 if rng.random() < 0.65 else -1.0)
        shade[box] += prof * taper * wob * _s(amp)
        _mark(region, box, prof * taper)


def _pit(rng: np.random.Generator, shade: np.ndarray, size: int, region: np.ndarray | None = None) -> None:
    yy, xx = _grid(size)
    n = int(rng.integers(1, 5))
    lc, ls = _dir(_u(rng, 0.0, 2 * math.pi))  # light direction (shared)
    cy0, cx0 = _u(rng, 0.15, 0.85) * size, _u(rng, 0.15, 0.85) * size
    for k in range(n):
        if k == 0:
            cy, cx = cy0, cx0
        else:
            cy = min(max(cy0 + _u(rng, -25, 25), 4.0), size - 5.0)
            cx = min(max(cx0 + _u(rng, -25, 25), 4.0), size - 5.0)
        r = _u(rng, 1.8, 4.5)
        box = _box(cy, cx, cy, cx, size, 3 * r + 3)
        assert box is not None  # the centre is inside the image
        Y, X = yy[box], xx[box]
        dy = Y - _s(cy)
        dx = X - _s(cx)
        q = (dy * dy + dx * dx) * _s(1.0 / (r * r))
        core = _F(1.0) / (_F(1.0) + q * q * q)
        depth = _u(rng, 0.25, 0.65)
        # rim: a ring just outside the pit, bright on the side facing the light
        e = q - _F(1.3)
        ring = _F(1.0) / (_F(1.0) + e * e * _F(10.0))
        side = np.clip((dx * _s(lc) + dy * _s(ls)) * _s(1.0 / r), _F(-1.0), _F(1.0))
        hl = _u(rng, 0.15, 0.45)
        # inside: the wall facing away from the light is brighter than the other
        inner = core * side * _s(-0.5 * depth)
        shade[box] = shade[box] * (_F(1.0) - _s(depth) * core + inner) + ring * np.maximum(
            _F(0.2) + _F(0.8) * side, _F(0.0)
        ) * _s(hl)
        _mark(region, box, np.maximum(core, ring))


def _crack(rng: np.random.Generator, shade: np.ndarray, size: int, region: np.ndarray | None = None) -> None:
    yy, xx = _grid(size)
    mask = np.zeros((size, size), dtype=np.float32)
    w0 = _u(rng, 0.5, 1.1)

    def walk(y: float, x: float, ang: float, steps: int, w: float, depth: int) -> None:
        for i in range(steps):
            ang += _u(rng, -0.7, 0.7)
            step = _u(rng, 3.0, 8.0)
            c, s = _dir(ang)
            y1, x1 = y + s * step, x + c * step
            ww = max(w * (1.0 - 0.6 * i / steps), 0.35)
            box = _box(y, x, y1, x1, size, 4 * ww + 2)
            if box is not None:
                d2, _ = _seg_d2(yy[box], xx[box], y, x, y1, x1)
                q = _F(1.0) / (_F(1.0) + d2 * _s(1.0 / (ww * ww)))
                np.maximum(mask[box], q * q, out=mask[box])
            if depth < 2 and rng.random() < 0.18:
                walk(
                    y1,
                    x1,
                    ang + _u(rng, 0.5, 1.2) * (1 if rng.random() < 0.5 else -1),
                    int(rng.integers(2, 6)),
                    ww * 0.8,
                    depth + 1,
                )
            y, x = y1, x1
            if not (-5 < y < size + 5 and -5 < x < size + 5):
                break

    y, x = _u(rng, 0.2, 0.8) * size, _u(rng, 0.2, 0.8) * size
    ang = _u(rng, 0.0, 2 * math.pi)
    walk(y, x, ang, int(rng.integers(5, 13)), w0, 0)
    if rng.random() < 0.6:  # grow the other way from the origin too
        walk(y, x, ang + math.pi, int(rng.integers(3, 9)), w0 * 0.9, 1)
    depth = _u(rng, 0.45, 0.85)
    shade *= _F(1.0) - mask * _s(depth)
    _mark(region, (slice(None), slice(None)), mask)


# absolute stain colours (linear-ish RGB in [0, 1])
_STAIN_COLOURS = (
    (0.55, 0.30, 0.14),  # rust
    (0.55, 0.50, 0.22),  # oil / coolant residue (yellowish)
    (0.10, 0.10, 0.11),  # dark grease
    (0.88, 0.88, 0.82),  # dried water / salt (light)
    (0.22, 0.32, 0.58),  # blue-ish tarnish
    (0.48, 0.25, 0.50),  # purple heat tint
)


def _stain(
    rng: np.random.Generator, rgb: np.ndarray, size: int, col: np.ndarray, region: np.ndarray | None = None
) -> None:
    yy, xx = _grid(size)
    cy, cx = _u(rng, 0.2, 0.8) * size, _u(rng, 0.2, 0.8) * size
    r = _u(rng, 10.0, 32.0)
    ex = _u(rng, 0.65, 1.5)  # ellipticity
    c, s = _dir(_u(rng, 0.0, math.pi))
    box = _box(cy, cx, cy, cx, size, 2.6 * r * max(ex, 1.0) + 2)
    assert box is not None  # the centre is inside the image
    Y, X = yy[box], xx[box]
    dy = Y - _s(cy)
    dx = X - _s(cx)
    u = dx * _s(c) + dy * _s(s)
    v = dy * _s(c) - dx * _s(s)
    q = (u * u * _s(1.0 / ex) + v * v * _s(ex)) * _s(1.0 / (r * r))
    h, w = Y.shape
    irr = _F(0.55) + _F(0.9) * _value_noise(rng, h, w, 4, 4)
    q = q / irr
    sharp = rng.random() < 0.5
    m = _F(1.0) / (_F(1.0) + q * q * (q if sharp else _F(1.0)))
    m = m * (_F(0.75) + _F(0.5) * _value_noise(rng, h, w, 6, 6))
    if rng.random() < 0.35:  # coffee-ring edge
        e = q - _F(1.0)
        m = m + _F(0.6) / (_F(1.0) + e * e * _F(25.0))
    # a stain colour that differs visibly from the surface colour
    cands = [k for k, sc in enumerate(_STAIN_COLOURS) if sum(abs(sc[j] - float(col[j])) for j in range(3)) > 0.45]
    k = int(cands[int(rng.integers(0, len(cands)))]) if cands else 2
    sc = np.array(_STAIN_COLOURS[k]) + rng.uniform(-0.05, 0.05, 3)
    strength = _s(_u(rng, 0.35, 0.7))
    _mark(region, box, m)
    m = m * strength
    for ch in range(3):
        sub = rgb[box[0], box[1], ch]
        sub += (_s(sc[ch]) - sub) * m


# --------------------------------------------------------------------------- render


def _blur121(a: np.ndarray) -> np.ndarray:
    """Separable [1,2,1]/4 blur with edge replication (elementwise adds only)."""
    p = np.concatenate([a[:, :1], a, a[:, -1:]], axis=1)
    a = (p[:, :-2] + p[:, 1:-1] * _F(2.0) + p[:, 2:]) * _F(0.25)
    p = np.concatenate([a[:1], a, a[-1:]], axis=0)
    out: _Arr = (p[:-2] + p[1:-1] * _F(2.0) + p[2:]) * _F(0.25)
    return out


def render(seed: int, index: int, size: int = 160) -> tuple[npt.NDArray[np.uint8], int]:
    """One image (uint8 [size, size, 3] RGB) and its label, from rng([seed, index])."""
    img, label, _ = _render(seed, index, size, False)
    return img, label


def render_with_region(seed: int, index: int, size: int = 160) -> tuple[npt.NDArray[np.uint8], int, _Arr]:
    """Like :func:`render`, plus a float32 [size, size] map in [0, 1] of where the defect is.

    The map is all zeros for ``ok``. Computing it draws nothing from the rng, so the
    image is identical to :func:`render`'s. Useful for localisation targets.
    """
    img, label, region = _render(seed, index, size, True)
    assert region is not None
    return img, label, region


def _render(seed: int, index: int, size: int, with_region: bool) -> tuple[npt.NDArray[np.uint8], int, _Arr | None]:
    rng = np.random.default_rng([int(seed), int(index)])
    label = int(index) % len(LABELS)
    region = np.zeros((size, size), dtype=np.float32) if with_region else None

    shade, col, material, brush = _surface(rng, size)
    if label == 1:
        _scratch(rng, shade, size, brush, region)
    elif label == 2:
        _pit(rng, shade, size, region)
    elif label == 3:
        _crack(rng, shade, size, region)

    light, spec = _lighting(rng, size, material)
    lit = shade * light
    rgb = lit[:, :, None] * col.astype(np.float32)[None, None, :]
    if label == 4:
        _stain(rng, rgb, size, col, region)
    if spec is not None:
        rgb = rgb + spec[:, :, None]

    # optics: mild blur, mixed per image
    b = _u(rng, 0.0, 1.0)
    if b > 0.15:
        bl = _blur121(rgb)
        rgb = rgb + (bl - rgb) * _s(b)

    # sensor noise: Irwin-Hall(3) approximates a Gaussian; std = sigma
    sigma = _u(rng, 0.003, 0.025)
    nz = rng.random((3, size, size, 3), dtype=np.float32)
    rgb = rgb + (nz[0] + nz[1] + nz[2] - _F(1.5)) * _s(2.0 * sigma)
    img = np.floor(np.clip(rgb * _F(255.0) + _F(0.5), _F(0.0), _F(255.0))).astype(np.uint8)
    return img, label, region


def generate(seed: int, count: int, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images from ``seed``: (uint8 [count, size, size, 3] RGB, int64 [count]).

    Image ``i`` depends only on ``(seed, i)``; labels are ``i % 5`` (balanced).
    """
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.empty((count,), dtype=np.int64)
    for i in range(count):
        images[i], labels[i] = render(seed, i, size)
    return images, labels


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the uint8 pixels followed by the little-endian int64 labels."""
    h = hashlib.sha256(
        np.ascontiguousarray(images, dtype=np.uint8).tobytes() + np.ascontiguousarray(labels, dtype="<i8").tobytes()
    )
    return "sha256:" + h.hexdigest()

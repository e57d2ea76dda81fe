"""A tiny labelled detection set: coloured squares on grey noise, with their boxes.

:func:`squares` is a card ``data:`` generator for ``object-detection`` (see
:mod:`edgeds.datasets.detection`): each image holds one to three axis-aligned squares, red,
green or blue (classes 0, 1, 2: :data:`LABELS`), with sides between a sixth and a quarter of the
image, at least a sixth of the image apart, on grey noise that is the same in every channel
(so only the squares have colour). Deterministic per seed.
"""

from __future__ import annotations

import numpy as np

LABELS = ("red", "green", "blue")
COLOURS = np.array([[210, 40, 40], [40, 190, 40], [40, 40, 210]], dtype=np.int16)


def squares(seed: int, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images ``[count, size, size, 3]`` uint8 and their boxes ``[M, 6]``: image index,
    class, x1, y1, x2, y2 (pixels; x2/y2 exclusive, so a square's width is ``x2 - x1``)."""
    rng = np.random.default_rng(seed)
    low, high, gap = max(2, size // 6), max(3, size // 4), max(1, size // 6)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    rows: list[tuple[float, ...]] = []
    for index in range(count):
        noise = rng.integers(-25, 26, (size, size, 1), dtype=np.int16)
        image = np.broadcast_to(110 + noise, (size, size, 3)).copy()
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(50):  # bounded: a crowded image simply gets fewer squares
                side = int(rng.integers(low, high + 1))
                x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
                box = (x, y, x + side, y + side)
                if all(_apart(box, other, gap) for other in placed):
                    break
            else:
                continue
            cls = int(rng.integers(0, len(LABELS)))
            image[y : y + side, x : x + side] = COLOURS[cls] + noise[y : y + side, x : x + side]
            placed.append(box)
            rows.append((float(index), float(cls), *(float(v) for v in box)))
        images[index] = np.clip(image, 0, 255).astype(np.uint8)
    return images, np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap

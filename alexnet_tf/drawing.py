"""Drawing the net's pictures as uint8 RGB arrays: Fig. 3's conv1 kernel grid (in the
TensorBoard summaries of training and in `python -m alexnet_tf.figures`)."""

from __future__ import annotations

import math

import numpy as np

TILE = 44  # px a kernel is drawn at, at least (the paper's 11x11 kernels x 4)
GAP = 2  # px between tiles
COLUMN_GAP = 16  # px between the two columns' halves
BACKGROUND = 255


def _grid(tiles: np.ndarray, cols: int, gap: int = GAP) -> np.ndarray:
    """(N, h, w, 3) uint8 tiles -> one image, `cols` tiles a row, `gap` px apart."""
    n, h, w, _ = tiles.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def conv1_grid(kernel, columns: int = 2) -> np.ndarray:
    """Fig. 3: conv1 kernels (k, k, 3, N) as one uint8 RGB image (H, W, 3).

    Each kernel is scaled to 0..255 on its own (min to 0, max to 255) and enlarged to at
    least TILE px. With `columns=2` kernels 0..N/2-1 (column A) and N/2..N-1 (column B)
    are drawn as two grids side by side.
    """
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 4 or kernel.shape[2] != 3:
        raise ValueError(f"expected a conv1 kernel of shape (k, k, 3, N), got {kernel.shape}")
    tiles = np.transpose(kernel, (3, 0, 1, 2))  # (N, k, k, 3)
    lo = tiles.min(axis=(1, 2, 3), keepdims=True)
    hi = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - lo) / np.maximum(hi - lo, 1e-12)
    tiles = np.round(255 * tiles).astype(np.uint8)
    factor = max(1, math.ceil(TILE / kernel.shape[0]))
    tiles = np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)  # (N, k * f, k * f, 3)
    halves = np.array_split(tiles, columns)
    per_half = len(halves[0])
    cols = max(1, math.ceil(math.sqrt(per_half * 0.75)))  # each half a little taller than wide
    grids = [_grid(h, cols) for h in halves]
    height = max(g.shape[0] for g in grids)
    parts = []
    for i, g in enumerate(grids):
        if i:
            parts.append(np.full((height, COLUMN_GAP, 3), BACKGROUND, np.uint8))
        parts.append(np.pad(g, [(0, height - g.shape[0]), (0, 0), (0, 0)], constant_values=BACKGROUND))
    image = np.concatenate(parts, axis=1)
    return np.pad(image, [(GAP * 2, GAP * 2), (GAP * 2, GAP * 2), (0, 0)], constant_values=BACKGROUND)

"""The foreground's lines labelled into 8-connected blobs: one compiled pass (numba).

A frame's foreground is a few per cent of its pixels, and sensor noise makes thousands of
isolated specks of it. Found and labelled with numpy (the pixels' raster indices, a graph of
touching lines for ``scipy.sparse.csgraph``), that cost 0.55 ms a 512 px frame, a third of
everything detection does beside decoding; this kernel reads the mask once, eight pixels at a
time where they are all background, and joins touching lines with a union-find.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row, first and last column of every run of foreground pixels (raster order), and where
    each row's runs start in those arrays."""
    h, w = mask.shape
    words = w // 8
    pixels = mask.view(np.uint8)
    cap = h * ((w + 1) // 2)  # at most every other pixel starts a run: never grown in the loop
    ys = np.empty(cap, np.int64)
    x0s = np.empty(cap, np.int64)
    x1s = np.empty(cap, np.int64)
    row_start = np.empty(h + 1, np.int64)
    r = 0
    for y in range(h):
        row_start[y] = r
        row = pixels[y]
        eights = row[: words * 8].view(np.uint64)
        inside = False
        for k in range(words + 1):
            if k < words:
                if eights[k] == 0 and not inside:
                    continue  # eight background pixels
                lo, hi = 8 * k, 8 * k + 8
            else:
                lo, hi = 8 * words, w
            for x in range(lo, hi):
                on = row[x] != 0
                if on and not inside:
                    ys[r] = y
                    x0s[r] = x
                elif inside and not on:
                    x1s[r] = x - 1
                    r += 1
                inside = on
        if inside:
            x1s[r] = w - 1
            r += 1
    row_start[h] = r
    return ys[:r], x0s[:r], x1s[:r], row_start


@njit(cache=True, nogil=True)
def _root(parent: np.ndarray, r: int) -> int:
    while parent[r] != r:
        parent[r] = parent[parent[r]]
        r = parent[r]
    return r


@njit(cache=True, nogil=True)
def label_lines(mask: np.ndarray, short: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The runs of ``mask`` (2-D, C-contiguous bool) as ``(y, x0, x1, blob, n)``: row, first and
    last column (inclusive) of each run in raster order, its blob (8-connected: runs in
    consecutive rows touch when ``[x0 - 1, x1 + 1]`` overlaps the other), blobs numbered by
    their first run in raster order (as a label image numbers them), and their count. A run
    that touches nothing above or below and is shorter than ``short`` pixels (a speck, a blob
    of its own too small to be anything) is left out."""
    ys, x0s, x1s, row_start = _runs(mask)
    h = mask.shape[0]
    n = len(ys)
    parent = np.arange(n)
    touches = np.zeros(n, np.bool_)
    for y in range(1, h):
        above_end = row_start[y]
        i = row_start[y - 1]
        for j in range(row_start[y], row_start[y + 1]):
            while i < above_end and x1s[i] < x0s[j] - 1:
                i += 1  # ends left of this run: left of every later run too
            k = i
            while k < above_end and x0s[k] <= x1s[j] + 1:
                touches[k] = True
                touches[j] = True
                a, b = _root(parent, k), _root(parent, j)
                if a < b:
                    parent[b] = a
                elif b < a:
                    parent[a] = b
                k += 1
    kept = 0
    for r in range(n):
        if touches[r] or x1s[r] - x0s[r] + 1 >= short:
            kept += 1
    out_y = np.empty(kept, np.int64)
    out_x0 = np.empty(kept, np.int64)
    out_x1 = np.empty(kept, np.int64)
    out_blob = np.empty(kept, np.int64)
    number = np.full(n, -1, np.int64)
    blobs = 0
    q = 0
    for r in range(n):
        if not (touches[r] or x1s[r] - x0s[r] + 1 >= short):
            continue
        root = _root(parent, r)
        if number[root] < 0:
            number[root] = blobs
            blobs += 1
        out_y[q] = ys[r]
        out_x0[q] = x0s[r]
        out_x1[q] = x1s[r]
        out_blob[q] = number[root]
        q += 1
    return out_y, out_x0, out_x1, out_blob, blobs

"""Masks of ink (2-D bool arrays) measured with numpy alone: runs along rows, openings by a line, connected pieces,
growing. Packed into the .mar: numpy has no labelling or morphology of its own, and the .mar takes no scipy.
"""

import numpy as np

# Pixels of found ink (0..255, preprocess.find_ink) at least this dark are what the masks hold.
INK = 64


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal runs of True in a 2-D mask: where each starts and ends (exclusive), as flat indices into the
    mask with a column of False added after each row (so a row's last run ends within its row), in row order."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=bool)
    padded[:, 1:-1] = mask
    here, before = padded[:, 1:], padded[:, :-1]
    return np.flatnonzero(here & ~before), np.flatnonzero(before & ~here)


def paint_runs(shape: tuple[int, int], found: tuple, values: np.ndarray) -> np.ndarray:
    """Each run's value on its pixels (0 elsewhere): runs are disjoint and end on a False pixel, so a running sum of
    +value at each start and -value at each end paints them all at once."""
    height, width = shape
    starts, ends = found
    marks = np.zeros(height * (width + 1), dtype=np.int32)
    marks[starts] = values
    marks[ends] = -values
    return np.cumsum(marks, dtype=np.int32).reshape(height, width + 1)[:, :width]


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """The length of the horizontal run of True each pixel lies in; 0 outside."""
    starts, ends = found = runs(mask)
    return paint_runs(mask.shape, found, ends - starts)


def long_runs(mask: np.ndarray, length: float, axis: int = 1) -> np.ndarray:
    """The pixels of `mask` in runs of `length` or more along rows (axis 1) or columns (axis 0): an opening by a line,
    from two running sums: a run of `length` starts where a window holds that much ink, and covers the next ones."""
    if axis == 0:
        return long_runs(np.ascontiguousarray(mask.T), length).T
    length = max(1, int(np.ceil(length)))
    height, width = mask.shape
    if length > width:
        return np.zeros_like(mask)
    inked = np.zeros((height, width + 1), dtype=np.int16)  # WORK_SIZE a side at most
    np.cumsum(mask, axis=1, out=inked[:, 1:])
    starts = np.zeros((height, width + length), dtype=np.int16)
    starts[:, length : width + 1] = inked[:, length:] - inked[:, :-length] == length
    np.cumsum(starts, axis=1, out=starts)
    return starts[:, length:] > starts[:, :width]


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a mask: labels (0 background, 1..n) and n. Runs in consecutive rows that touch
    are joined, by repeated hooking of roots and pointer jumping: a handful of numpy passes, no Python loop over
    pixels (numpy has no labelling of its own; the .mar takes no scipy)."""
    height, width = mask.shape
    starts, ends = found = runs(mask)
    count = starts.size
    if count == 0:
        return np.zeros(mask.shape, dtype=np.int64), 0
    row, start, end = starts // (width + 1), starts % (width + 1), ends % (width + 1)
    key = width + 2  # runs of a row ordered by start and by end, apart from the next row's by a gap
    run_ends, run_starts = row * key + end, row * key + start
    above = (row - 1) * key
    first = np.searchsorted(run_ends, above + start - 1, side="right")
    last = np.searchsorted(run_starts, above + end + 1, side="left")
    touching = np.maximum(last - first, 0)
    lower = np.repeat(np.arange(count), touching)
    upper = np.repeat(first, touching) + (
        np.arange(touching.sum()) - np.repeat(np.cumsum(touching) - touching, touching)
    )
    labels = np.arange(count)
    while True:
        a, b = labels[lower], labels[upper]
        low = np.minimum(a, b)
        hooked = labels.copy()
        np.minimum.at(hooked, a, low)
        np.minimum.at(hooked, b, low)
        hooked = hooked[hooked]
        if np.array_equal(hooked, labels):
            break
        labels = hooked
    while not np.array_equal(labels, labels[labels]):
        labels = labels[labels]
    roots, compact = np.unique(labels, return_inverse=True)
    return paint_runs(mask.shape, found, compact + 1), roots.size


def near(mask: np.ndarray, reach: int = 2) -> np.ndarray:
    """`mask` grown by `reach` pixels each way (a square): a stroke's pixels with their soft edges."""
    grown = mask.copy()
    for shift in range(1, reach + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    wide = grown.copy()
    for shift in range(1, reach + 1):
        wide[:, shift:] |= grown[:, :-shift]
        wide[:, :-shift] |= grown[:, shift:]
    return wide

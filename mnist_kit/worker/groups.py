"""Several digits side by side in one picture: the ink split into digit-sized groups, left to right. Packed into
the .mar beside the handler (preprocess calls it).
"""

import numpy as np

from mnist_kit.worker.masks import INK, components, near

# Several digits (digit_groups): only ink GROUP_WIDE times wider than tall, or with an empty column, is split; pieces
# under GROUP_SPECK of the ink are specks; pieces overlapping by GROUP_OVERLAP of the narrower one's width are one
# group; a group is a digit from GROUP_HEIGHT of the tallest's height (GROUP_MIN_PX at least) and GROUP_MASS of the
# ink, and digits side by side share GROUP_LEVEL of the shorter one's height.
GROUP_WIDE = 0.9
GROUP_SPECK = 0.02
GROUP_OVERLAP = 0.5
GROUP_HEIGHT = 0.6
GROUP_MASS = 0.06
GROUP_MIN_PX = 10
GROUP_LEVEL = 0.5


def digit_groups(ink: np.ndarray) -> list[np.ndarray]:
    """The ink of each digit-sized group side by side, left to right; one group or none: one digit.

    Pieces are the connected strokes, specks left out; pieces that stand over one another (a 5's flag, a broken
    stroke) are one group. A group is digit-sized when it is at least GROUP_HEIGHT of the tallest and holds
    GROUP_MASS of the ink; smaller marks join the group nearest them. Only ink wider than it is tall, or with an
    empty column across it, is looked at: one digit is neither."""
    mask = ink >= INK
    cols = np.flatnonzero(mask.any(0))
    rows = np.flatnonzero(mask.any(1))
    if cols.size < 2:
        return []
    gap = cols.size < cols[-1] - cols[0] + 1
    if not gap and cols[-1] - cols[0] + 1 < GROUP_WIDE * (rows[-1] - rows[0] + 1):
        return []
    labels, count = components(mask)
    if count < 2:
        return []
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)[1:]
    pieces = []
    for n in np.flatnonzero(mass >= GROUP_SPECK * mass.sum()):
        ys, xs = np.nonzero(labels == n + 1)
        pieces.append([xs.min(), xs.max(), ys.min(), ys.max(), mass[n], [n + 1]])
    pieces.sort(key=lambda p: p[0])
    groups = []
    for piece in pieces:
        if groups:
            last = groups[-1]
            overlap = min(last[1], piece[1]) - max(last[0], piece[0]) + 1
            if overlap >= GROUP_OVERLAP * min(last[1] - last[0] + 1, piece[1] - piece[0] + 1):
                last[:5] = [
                    min(last[0], piece[0]),
                    max(last[1], piece[1]),
                    min(last[2], piece[2]),
                    max(last[3], piece[3]),
                    last[4] + piece[4],
                ]
                last[5] += piece[5]
                continue
        groups.append(piece)
    if len(groups) < 2:  # one group, or only specks (noise)
        return []
    tallest = max(g[3] - g[2] + 1 for g in groups)
    total = sum(g[4] for g in groups)
    sized = [
        g for g in groups if g[3] - g[2] + 1 >= max(GROUP_HEIGHT * tallest, GROUP_MIN_PX) and g[4] >= GROUP_MASS * total
    ]
    side_by_side = all(
        min(a[3], b[3]) - max(a[2], b[2]) + 1 >= GROUP_LEVEL * min(a[3] - a[2] + 1, b[3] - b[2] + 1)
        for a, b in zip(sized, sized[1:])
    )
    if len(sized) < 2 or not side_by_side:
        return []
    for g in groups:
        if not any(g is s for s in sized):
            nearest = min(sized, key=lambda s: abs((s[0] + s[1]) - (g[0] + g[1])))
            nearest[5] += g[5]
    return [np.where(near(np.isin(labels, g[5])), ink, 0.0).astype(np.float32) for g in sized]

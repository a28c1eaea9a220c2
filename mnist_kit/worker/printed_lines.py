"""The printed lines of a form, found and taken off a picture's ink before it is cropped: boxes and comb fields
around a digit, lines under and over it. Packed into the .mar beside the handler (preprocess calls it).
"""

import numpy as np

from mnist_kit.worker.masks import INK, long_runs, near, run_lengths

# A rule is RULE_ASPECT times longer than thick, RULE_SHARE of the ink's extent and RULE_MIN_PX long at least, within
# RULE_EDGE of the rest's top or bottom, reaches within RULE_COVER of its sides, and has no ink of the rest at its ends
# (RULE_END of its length); its rows are those it fills along RULE_FILL of its length. Nothing is taken off where less
# than RULE_REST of the ink would be left. Pictures RULE_HALVE_PX a side or more are searched at half size.
RULE_ASPECT = 6
RULE_SHARE = 0.4
RULE_MIN_PX = 12
RULE_EDGE = 0.2
RULE_COVER = 0.15
RULE_END = 0.1
RULE_REST = 0.15
RULE_HALVE_PX = 96
RULE_FILL = 0.6


def remove_rules(ink: np.ndarray) -> np.ndarray:
    """Ink without the printed lines of a form: underlines, lines above, and the sides of boxes and comb fields.

    A rule is a straight run many times longer than it is thick, at the top or the bottom of the rest of the ink,
    at least as wide as it, and free at both ends: a 7's bar, a 2's foot and a 5's flag are joined at one end to the
    digit's other strokes, and stay. Box sides are the vertical lines standing at the ends of rules. Pixels where a
    stroke crosses a rule are kept (they are not thin across), and where nothing but lines is left (a 1, a 0 drawn
    as a rectangle), nothing is taken off. Pictures RULE_HALVE_PX or more a side are searched at half size (a pixel
    there is any ink among four): a quarter of the work, and a line stays a line."""
    mask = ink >= INK
    if np.count_nonzero(mask) < 8:
        return ink
    height, width = mask.shape
    if min(height, width) < RULE_HALVE_PX:
        cut = rule_pixels(mask, RULE_MIN_PX)
    else:
        even = np.zeros((height + height % 2, width + width % 2), dtype=bool)
        even[:height, :width] = mask
        half = even[::2, ::2] | even[1::2, ::2] | even[::2, 1::2] | even[1::2, 1::2]
        cut = rule_pixels(half, RULE_MIN_PX // 2)
        if cut is not None:
            cut = cut.repeat(2, 0).repeat(2, 1)[:height, :width] & mask
    if cut is None:
        return ink
    # The lines' soft edges go with them; where that leaves next to nothing, the lines were the picture.
    kept = np.where(near(cut) & ~(mask & ~cut), 0.0, ink).astype(np.float32)
    return kept if kept.sum() >= RULE_REST * ink.sum() else ink


def rule_pixels(mask: np.ndarray, min_px: int) -> np.ndarray | None:
    """The pixels of `mask` that remove_rules takes off, or None where there are no rules."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    tall = mask.copy()  # a rule tilted a little steps from row to row: join each pixel to the rows beside it
    tall[1:] |= mask[:-1]
    tall[:-1] |= mask[1:]
    along = run_lengths(tall) * mask
    if along.max() < max(min_px, RULE_SHARE * width):  # most digits: no long straight run at all
        return None
    across_v = run_lengths(mask.T).T
    flat = mask & (along >= max(min_px, RULE_SHARE * width)) & (along >= RULE_ASPECT * across_v)
    if all(ends_in_a_stroke(mask & ~flat, band, height) for band in top_or_bottom(bands(flat, axis=0), rows, height)):
        return None  # a 7's bar, a 2's foot: no need to look for a box
    wide = mask.T.copy()
    wide[1:] |= mask.T[:-1]
    wide[:-1] |= mask.T[1:]
    along_v = (run_lengths(wide) * mask.T).T
    across_h = run_lengths(mask)
    upright = mask & (along_v >= max(min_px, RULE_SHARE * height)) & (along_v >= RULE_ASPECT * across_h)
    horizontal, vertical = bands(flat, axis=0), bands(upright, axis=1)
    # Vertical lines at the ink's left and right edges may be box sides: the rest of the ink is judged without them,
    # and without any horizontal line (corners and crossings included).
    outer = [v for v in vertical if v[0] <= cols[0] + 2 or v[1] >= cols[-1] - 2]
    lefts, rights = [v for v in outer if v[0] <= cols[0] + 2], [v for v in outer if v[1] >= cols[-1] - 2]
    if lefts and rights:  # a narrow box's top and bottom can be too short to be lines alone: rows joining its sides
        horizontal = sorted(set(horizontal) | set(box_ends(mask, lefts[0], rights[-1])))
    strokes = mask.copy()  # what a line's end may join: neither a horizontal line nor a side (corners included)
    for x0, x1, y0, y1 in outer:
        strokes[max(0, y0 - x1 + x0 - 3) : y1 + x1 - x0 + 4, x0 : x1 + 1] = False
    rest = strokes.copy()
    for y0, y1, x0, x1 in horizontal:
        rest[y0 : y1 + 1, max(0, x0 - y1 + y0 - 3) : x1 + y1 - y0 + 4] = False
    if rest.sum() < RULE_REST * mask.sum():
        return None
    r_rows, r_cols = np.flatnonzero(rest.any(1)), np.flatnonzero(rest.any(0))
    top, bottom, left, right = r_rows[0], r_rows[-1], r_cols[0], r_cols[-1]
    r_height, r_width = bottom - top + 1, right - left + 1
    rules = []
    for y0, y1, x0, x1 in horizontal:
        reach = y1 - y0 + 3
        outside = y1 <= top + RULE_EDGE * r_height or y0 >= bottom - RULE_EDGE * r_height
        covers = x0 <= left + RULE_COVER * r_width and x1 >= right - RULE_COVER * r_width
        long = x1 - x0 + 1 >= RULE_SHARE * max(r_height, r_width)
        end = max(reach, int(RULE_END * (x1 - x0 + 1)))
        band = strokes[max(0, y0 - reach) : y1 + reach + 1]
        band = band & ~flat[max(0, y0 - reach) : y1 + reach + 1]
        joined = band[:, max(0, x0 - reach) : x0 + end].sum() + band[:, max(0, x1 - end + 1) : x1 + reach + 1].sum()
        boxed = {"left", "right"} <= {side_at(side, (y0, y1, x0, x1)) for side in outer}  # a box's top or bottom
        if outside and covers and long and (boxed or joined <= (y1 - y0 + 1) ** 2):
            rules.append((y0, y1, x0, x1))
    if not rules:
        return None
    sides = [
        side
        for side in outer
        if side[2] <= top + RULE_COVER * r_height
        and side[3] >= bottom - RULE_COVER * r_height
        and any(side_at(side, rule) for rule in rules)
    ]
    return cut_lines(mask, rules, sides)


def cut_lines(mask: np.ndarray, rules: list, sides: list) -> np.ndarray:
    """The pixels of the `rules` and box `sides` (bands) to take off `mask`: the lines' pixels, but not a stroke
    crossing one (it runs on beyond the line), and every corner."""
    cut = np.zeros_like(mask)
    for y0, y1, x0, x1 in rules:  # with the line's fainter rows beside it
        y0, y1 = max(0, y0 - 2), y1 + 2
        box = np.s_[y0 : y1 + 1, x0 : x1 + 1]
        cut[box] |= mask[box] & ~long_runs(mask[:, x0 : x1 + 1], y1 - y0 + 2, axis=0)[y0 : y1 + 1]
    for x0, x1, y0, y1 in sides:
        x0, x1 = max(0, x0 - 2), x1 + 2
        box = np.s_[max(0, y0) : y1 + 1, x0 : x1 + 1]
        cut[box] |= mask[box] & ~long_runs(mask[max(0, y0) : y1 + 1], x1 - x0 + 2)[:, x0 : x1 + 1]
        for ry0, ry1, rx0, rx1 in rules:
            grow_x, grow_y = ry1 - ry0 + 3, x1 - x0 + 3
            rows_ = np.s_[max(0, y0 - grow_y, ry0) : min(y1 + grow_y, ry1) + 1]
            corner = (rows_, np.s_[max(0, x0, rx0 - grow_x) : min(x1, rx1 + grow_x) + 1])
            cut[corner] = mask[corner]
    return cut


def top_or_bottom(horizontal: list, rows: np.ndarray, height: int) -> list:
    """The horizontal lines near the top or the bottom of the ink: the only places a rule can be."""
    edge = RULE_EDGE * height
    return [band for band in horizontal if band[1] <= rows[0] + edge or band[0] >= rows[-1] - edge]


def ends_in_a_stroke(others: np.ndarray, band: tuple, height: int) -> bool:
    """Whether ink other than horizontal lines meets one end of a horizontal line (y0, y1, x0, x1), and is no box
    side standing there (it leaves the strip above or below that end before RULE_SHARE of the ink's height)."""
    y0, y1, x0, x1 = band
    reach = y1 - y0 + 3
    end = max(reach, int(RULE_END * (x1 - x0 + 1)))
    for strip in (np.s_[:, max(0, x0 - reach) : x0 + end], np.s_[:, max(0, x1 - end + 1) : x1 + reach + 1]):
        column = others[strip]
        near_end = column[max(0, y0 - reach) : y1 + reach + 1]
        extent = np.flatnonzero(column.any(1))
        tall = extent.size and extent[-1] - extent[0] + 1 >= RULE_SHARE * height
        if near_end.sum() > (y1 - y0 + 1) ** 2 and not tall:
            return True
    return False


def box_ends(mask: np.ndarray, left: tuple, right: tuple) -> list[tuple[int, int, int, int]]:
    """The top and bottom of a box whose sides are `left` and `right` (x0, x1, y0, y1): the rows near the sides' ends
    that the ink fills from one side to the other, as horizontal lines (y0, y1, x0, x1)."""
    x0, x1 = left[0], right[1]
    reach = max(left[1] - left[0], right[1] - right[0]) + 2  # a box's lines are about as thick as its sides
    ends = []
    for end, inward in ((min(left[2], right[2]), 1), (max(left[3], right[3]), -1)):
        near = np.arange(end - inward * reach, end + inward * (reach + 1), inward)
        near = np.sort(near[(near >= 0) & (near < mask.shape[0])])
        filled = near[mask[near, x0 : x1 + 1].mean(1) >= RULE_FILL]
        if filled.size:
            ends.append((int(filled[0]), int(filled[-1]), int(x0), int(x1)))
    return ends


def side_at(side: tuple, rule: tuple) -> str | None:
    """The end of a horizontal rule (y0, y1, x0, x1) a vertical line (x0, x1, y0, y1) stands on with one of its own
    ends, as a box's side does: "left", "right", or None."""
    x0, x1, y0, y1 = side
    ry0, ry1, rx0, rx1 = rule
    reach = max(x1 - x0, ry1 - ry0) + 3
    if min(abs(y - ry) for y in (y0, y1) for ry in (ry0, ry1)) > reach:
        return None
    return (
        "left"
        if abs(x0 - rx0) <= reach or abs(x1 - rx0) <= reach
        else "right"
        if abs(x1 - rx1) <= reach or abs(x0 - rx1) <= reach
        else None
    )


def bands(lines: np.ndarray, axis: int) -> list[tuple[int, int, int, int]]:
    """Straight lines in a mask of line pixels: runs of consecutive rows (axis 0) or columns (axis 1) holding some,
    each as (first, last, start, end) along both axes: rows then columns for horizontal lines, the other way round
    for vertical ones. A line's rows (columns) are those it fills along RULE_FILL of its length at least: a stroke
    running beside it for a while, or resting on it, is not part of it."""
    if axis == 1:
        return bands(lines.T, 0)
    found = []
    index = np.flatnonzero(lines.any(1))
    if index.size == 0:
        return found
    breaks = np.flatnonzero(np.diff(index) > 1)
    for first, last in zip(np.r_[index[0], index[breaks + 1]], np.r_[index[breaks], index[-1]]):
        part = lines[first : last + 1]
        along = np.flatnonzero(part.any(0))
        filled = np.flatnonzero(part[:, along[0] : along[-1] + 1].mean(1) >= RULE_FILL)
        if filled.size:
            along = np.flatnonzero(part[filled[0] : filled[-1] + 1].any(0))
            found.append((int(first + filled[0]), int(first + filled[-1]), int(along[0]), int(along[-1])))
    return found

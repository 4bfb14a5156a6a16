"""Relabelling a spine: pure functions over level maps ``{segment index: level name or None}``.

Segment 1 is at the head end and indices count down the spine, so one named segment names them all: segment
``i + k`` is ``k`` levels below segment ``i``. Counting runs C1 ... T12, L1 ... L5; a sixth lumbar vertebra
(L6) is never produced by counting, only by naming a segment L6 explicitly.
"""

from analysis.segmentation.levels import LEVEL_NAMES

COUNTABLE = tuple(name for name in LEVEL_NAMES if name != "L6")


class RelabelError(ValueError):
    """A relabel that cannot be applied (unknown level or segment, two segments with one name)."""


def _check_level(level):
    if level not in LEVEL_NAMES:
        raise RelabelError(f"unknown level {level!r}; one of C1-C7, T1-T12, L1-L6")


def _check_unique(level_map):
    seen = {}
    for index, level in sorted(level_map.items()):
        if level is None:
            continue
        if level in seen:
            raise RelabelError(f"segments {seen[level]} and {index} would both be {level}")
        seen[level] = index
    return level_map


def levels_by_counting(n_segments, index, level):
    """Name every segment by counting from segment ``index`` named ``level``.

    Parameters
    ----------
    n_segments : int
        Segments 1 (head end) to ``n_segments``.
    index : int
    level : str

    Returns
    -------
    dict
        ``{index: level or None}``; None where counting runs past C1 or L5.
    """
    indices = list(range(1, n_segments + 1))
    if index not in indices:
        raise RelabelError(f"no segment {index}")
    _check_level(level)
    if level == "L6":
        # An explicit L6 names the segment; the others count from L5 above it.
        above = levels_by_counting(index - 1, index - 1, "L5") if index > 1 else {}
        return {i: above.get(i) if i < index else ("L6" if i == index else None) for i in indices}
    start = COUNTABLE.index(level)
    out = {}
    for i in indices:
        position = start + (i - index)
        out[i] = COUNTABLE[position] if 0 <= position < len(COUNTABLE) else None
    return out


def shift_levels(level_map, delta):
    """Every named level moved by ``delta`` (+1: one level down, T12 -> L1); unnamed segments stay unnamed."""
    out = {}
    for index, level in level_map.items():
        if level is None:
            out[index] = None
            continue
        position = (COUNTABLE.index(level) if level in COUNTABLE else COUNTABLE.index("L5") + 1) + delta
        out[index] = COUNTABLE[position] if 0 <= position < len(COUNTABLE) else None
    return _check_unique(out)


def rename_level(level_map, index, level):
    """One segment renamed (``level`` None: unnamed); refused when another segment already has the name."""
    if index not in level_map:
        raise RelabelError(f"no segment {index}")
    if level is not None:
        _check_level(level)
    return _check_unique({**level_map, index: level})


def describe_changes(before, after):
    """Readable differences of two level maps: ``["segment 3: T12 -> L1", ...]``."""
    lines = []
    for index in sorted(set(before) | set(after)):
        old, new = before.get(index), after.get(index)
        if old != new:
            lines.append(f"segment {index}: {old or 'unnamed'} -> {new or 'unnamed'}")
    return lines

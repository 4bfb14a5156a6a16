"""Relabelling a spine: pure functions over level maps ``{segment index: level name or None}``.

Segment 1 is at the head end and indices count down the spine, so one named segment names them all: segment
``i + k`` is ``k`` levels below segment ``i``. Counting runs C1 ... T12, L1 ... L5; a sixth lumbar vertebra
(L6) is never produced by counting or shifting, only by naming a segment L6 explicitly.
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
    """Name every segment by counting from segment ``index`` named ``level``
    (:func:`analysis.segmentation.levels.levels_by_counting`, with its errors as :class:`RelabelError`)."""
    from analysis.segmentation import levels as segmentation_levels

    try:
        return segmentation_levels.levels_by_counting(n_segments, int(index), level)
    except ValueError as exc:
        raise RelabelError(str(exc)) from None


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

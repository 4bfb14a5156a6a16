"""Vertebra level names and the VerSe label numbering used for every label map the product writes.

VerSe numbering (SPEC section 6): C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25 (a sixth lumbar
vertebra, a transitional variant). The "level index" n of the thoraco-lumbar calibration (SPEC section 2)
counts T5 = 1 ... L2 = 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LEVEL_NAMES = (
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 7)]
)
VERSE_LABEL = {name: number for number, name in enumerate(LEVEL_NAMES, start=1)}
LEVEL_OF_LABEL = {number: name for name, number in VERSE_LABEL.items()}

CHEST_LEVELS = ("T5", "T6", "T7", "T8", "T9", "T10")
ABDOMEN_LEVELS = ("T12", "L1", "L2")
CALIBRATION_LEVELS = ("T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2")
CALIBRATION_INDEX = {name: n for n, name in enumerate(CALIBRATION_LEVELS, start=1)}


def level_sort_key(name):
    """Cranio-caudal order of a level name (``"T12"`` before ``"L1"``)."""
    return VERSE_LABEL[name]


def levels_by_counting(n_segments, index, level):
    """Name every body segment by counting from one segment whose level is known.

    Segments are numbered as in the ``segments`` contract (SPEC section 6): index 1 at the head end,
    counting down one per vertebra. Naming one of them names all the others: the segment one index
    further down is the next level caudally.

    Parameters
    ----------
    n_segments : int
        Number of body segments (indices 1..n_segments).
    index : int
        The segment whose level is known (1..n_segments).
    level : str
        Its level name, e.g. ``"T5"``.

    Returns
    -------
    dict of int to str or None
        Index -> level name; None beyond C1 at the head end and beyond L5 at the foot end (L6, a
        transitional variant, is never produced by counting: only when ``level`` itself is L6 is there an
        L6, and then nothing below it).
    """
    if level not in VERSE_LABEL:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVEL_NAMES)}")
    if not 1 <= index <= n_segments:
        raise ValueError(f"segment index {index} outside 1..{n_segments}")
    last = LEVEL_NAMES.index("L6" if level == "L6" else "L5")
    base = LEVEL_NAMES.index(level)
    names = {}
    for i in range(1, n_segments + 1):
        position = base + (i - index)
        names[i] = LEVEL_NAMES[position] if 0 <= position <= last else None
    return names


@dataclass
class BodySegment:
    """One vertebral body segment found in a CT, named or not (the ``segments`` contract, SPEC section 6).

    Attributes
    ----------
    index : int
        1 at the head end, counting down one per vertebra; the value of this body in the segment-index
        label map.
    level : str or None
        Level name, or None where the level was withheld (or the segment is sacral).
    confidence : float or None
        Confidence 0..1 in ``level``; None when not named or when the name came from outside (a given
        label map).
    flags : list of str
        Why a level was withheld or doubted (e.g. ``"level_withheld"``, ``"sliver_at_edge"``).
    """

    index: int
    level: str | None = None
    confidence: float | None = None
    flags: list = field(default_factory=list)


def segments_from_verse_labels(labels):
    """Segment-index map and segment list of a VerSe-numbered body label map (external labels).

    Each labelled body is one segment with its given level. The index counts vertebrae from the most
    cranial labelled one (index = VerSe number - smallest VerSe number present + 1), so an unlabelled
    vertebra between two labelled ones leaves its index unused and counting by index stays right.

    Parameters
    ----------
    labels : np.ndarray of int, shape (z, y, x)
        VerSe body labels (1-25), 0 elsewhere.

    Returns
    -------
    segment_labels : np.ndarray of uint8, shape (z, y, x)
    segments : list of BodySegment
    """
    import numpy as np

    labels = np.asarray(labels)
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if v not in LEVEL_OF_LABEL]
    if unknown:
        raise ValueError(f"label values {unknown} are not vertebral body labels (VerSe 1-25)")
    if not present:
        return np.zeros(labels.shape, dtype=np.uint8), []
    lut = np.zeros(max(present) + 1, dtype=np.uint8)
    segments = []
    for value in present:
        lut[value] = value - present[0] + 1
        segments.append(BodySegment(index=int(lut[value]), level=LEVEL_OF_LABEL[value]))
    return lut[labels.astype(np.intp)], segments

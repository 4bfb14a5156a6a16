"""Vertebra level names and the VerSe label numbering used for every label map the product writes.

VerSe numbering (SPEC section 6): C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25 (a sixth lumbar
vertebra, a transitional variant). The "level index" n of the thoraco-lumbar calibration (SPEC section 2)
counts T5 = 1 ... L2 = 10.
"""

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

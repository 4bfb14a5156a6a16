"""The ``segments`` contract (SPEC section 6): every body segment, named or not, with its index.

Index 1 at the head end, counting down one per vertebra; naming one segment names every other by counting
(:func:`analysis.segmentation.levels.levels_by_counting`, used by the review of levels)."""

import numpy as np
import pytest

from analysis.segmentation.levels import VERSE_LABEL, BodySegment, levels_by_counting, segments_from_verse_labels


def test_counting_from_one_named_segment_names_the_others():
    # T12 at index 2: one above is T11, then L1, L2, L3 downwards (the order of LEVEL_NAMES).
    assert levels_by_counting(5, 2, "T12") == {1: "T11", 2: "T12", 3: "L1", 4: "L2", 5: "L3"}
    assert levels_by_counting(1, 1, "T5") == {1: "T5"}


def test_counting_stops_at_c1_and_l5():
    # Above C1 there is no vertebra; below L5 the sacrum (L6 is a variant that counting never produces).
    assert levels_by_counting(3, 3, "C2") == {1: None, 2: "C1", 3: "C2"}
    assert levels_by_counting(4, 1, "L4") == {1: "L4", 2: "L5", 3: None, 4: None}
    # A reviewer who names an L6 gets it, L5 above it, and nothing below.
    assert levels_by_counting(3, 2, "L6") == {1: "L5", 2: "L6", 3: None}


def test_counting_refuses_unknown_levels_and_indices():
    with pytest.raises(ValueError, match="unknown level 'T13'"):
        levels_by_counting(3, 1, "T13")
    with pytest.raises(ValueError, match="segment index 4 outside 1..3"):
        levels_by_counting(3, 4, "T5")
    with pytest.raises(ValueError, match="segment index 0"):
        levels_by_counting(3, 0, "T5")


def test_segments_of_a_verse_label_map_keep_the_vertebra_count():
    labels = np.zeros((6, 2, 2), dtype=np.uint8)
    labels[0:2] = VERSE_LABEL["T12"]  # 19
    labels[2:4] = VERSE_LABEL["L1"]  # 20
    labels[5] = VERSE_LABEL["L3"]  # 22: L2 not labelled
    segment_labels, segments = segments_from_verse_labels(labels)
    # Index = VerSe number - 19 + 1, so L3 is index 4 (index 3, L2, is unused).
    assert segments == [BodySegment(1, "T12"), BodySegment(2, "L1"), BodySegment(4, "L3")]
    np.testing.assert_array_equal(segment_labels[:, 0, 0], [1, 1, 2, 2, 0, 4])
    assert segment_labels.dtype == np.uint8
    # Counting from any of them names the others as the label map does.
    assert levels_by_counting(4, 4, "L3") == {1: "T12", 2: "L1", 3: "L2", 4: "L3"}


def test_segments_of_an_empty_or_foreign_label_map():
    segment_labels, segments = segments_from_verse_labels(np.zeros((2, 2, 2), dtype=np.uint8))
    assert segments == [] and not segment_labels.any()
    with pytest.raises(ValueError, match=r"label values \[26\]"):
        segments_from_verse_labels(np.full((2, 2, 2), 26, dtype=np.uint8))

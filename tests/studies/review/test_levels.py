"""Relabelling a spine: naming one segment names all by counting; shifting; renaming; no duplicate names."""

import pytest

from studies.review.levels import RelabelError, describe_changes, levels_by_counting, rename_level, shift_levels


def test_naming_one_segment_names_the_others_by_counting():
    # Segment 3 of 5 is L1: segment 1 is two above (T11), segment 5 two below (L3).
    assert levels_by_counting(5, 3, "L1") == {1: "T11", 2: "T12", 3: "L1", 4: "L2", 5: "L3"}
    # Counting past L5 or above C1 leaves segments unnamed (L6 only by an explicit name).
    assert levels_by_counting(3, 1, "L4") == {1: "L4", 2: "L5", 3: None}
    assert levels_by_counting(3, 3, "C2") == {1: None, 2: "C1", 3: "C2"}
    assert levels_by_counting(3, 3, "L6") == {1: "L4", 2: "L5", 3: "L6"}


def test_shift_moves_every_named_level_and_keeps_unnamed():
    assert shift_levels({1: "T12", 2: "L1", 3: None}, 1) == {1: "L1", 2: "L2", 3: None}
    assert shift_levels({1: "T12", 2: "L1"}, -1) == {1: "T11", 2: "T12"}
    assert shift_levels({1: "L4", 2: "L5"}, 1) == {1: "L5", 2: None}


def test_rename_refuses_a_name_already_used_and_unknown_levels():
    assert rename_level({1: "T12", 2: "L1"}, 2, "L2") == {1: "T12", 2: "L2"}
    with pytest.raises(RelabelError, match="segments 1 and 2 would both be T12"):
        rename_level({1: "T12", 2: "L1"}, 2, "T12")
    with pytest.raises(RelabelError, match="unknown level 'X9'"):
        rename_level({1: "T12"}, 1, "X9")
    with pytest.raises(RelabelError, match="segment index 4 outside 1..3"):
        levels_by_counting(3, 4, "L1")


def test_describe_changes():
    assert describe_changes({1: "T12", 2: None}, {1: "L1", 2: "L2"}) == ["segment 1: T12 -> L1",
                                                                       "segment 2: unnamed -> L2"]

"""Series selection rules on header facts (pure): eligibility, ranking, reasons, override."""

import pytest

from studies.pacs.selection import SeriesCandidate, select_series

AXIAL = (0.0, 0.0, 1.0)


def ct(uid, **kw):
    base = dict(series_uid=uid, modality="CT", n_images=200, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                normal=AXIAL, thickness_mm=1.0, number=int(uid))
    return SeriesCandidate(**{**base, **kw})


def test_each_rule_gives_its_reason():
    candidates = [
        ct("1", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), n_localizers=2, n_images=2),
        ct("2", image_type=("DERIVED", "SECONDARY", "MPR")),
        ct("3", normal=(1.0, 0.0, 0.0)),  # sagittal
        ct("4", thickness_mm=5.0),
        ct("5", modality="MR"),
        ct("6", contrast=True, thickness_mm=0.625),
        ct("7", thickness_mm=2.0),
        ct("8", thickness_mm=1.0, n_images=150),
        ct("9", thickness_mm=1.0, n_images=300),
    ]
    selection = select_series(candidates)
    reasons = selection.reasons
    assert selection.chosen.series_uid == "9"
    assert reasons["1"] == "not eligible: localizer/scout images only"
    assert reasons["2"].startswith("not eligible: DERIVED/SECONDARY images")
    assert reasons["3"] == "not eligible: not axial (slice normal 90 degrees from the body axis: sagittal/coronal)"
    assert reasons["4"] == "not eligible: slices 5 mm thick (more than 3 mm)"
    assert reasons["5"] == "not eligible: Modality is MR, not CT"
    # Plain before contrast even when the contrast series is thinner; then thinner; then more images.
    assert reasons["6"].endswith("contrast-enhanced; a plain series is preferred")
    assert reasons["7"].endswith("thicker slices than 1 mm")
    assert reasons["8"].endswith("fewer images (150 vs 300)")
    assert reasons["9"] == "chosen: CT ORIGINAL/PRIMARY/AXIAL, 1 mm, 300 images, plain; the best of 4 eligible series"


def test_contrast_only_study_takes_the_contrast_series():
    selection = select_series([ct("1", contrast=True, thickness_mm=2.0), ct("2", contrast=True)])
    assert selection.chosen.series_uid == "2"


def test_three_mm_is_allowed_and_tilt_within_ten_degrees_is_axial():
    import math

    tilted = (0.0, math.sin(math.radians(8)), math.cos(math.radians(8)))
    selection = select_series([ct("1", thickness_mm=3.0, normal=tilted)])
    assert selection.chosen.series_uid == "1"


def test_override_and_unknown_override():
    candidates = [ct("1"), ct("2", thickness_mm=2.0)]
    selection = select_series(candidates, override_uid="2")
    assert selection.override and selection.chosen.series_uid == "2"
    assert selection.reasons["2"].startswith("chosen by override (automatic choice: 1); not chosen:")
    with pytest.raises(ValueError, match="series 3 is not in this study"):
        select_series(candidates, override_uid="3")


def test_nothing_eligible():
    selection = select_series([ct("1", modality="SR")])
    assert selection.chosen is None and selection.reasons["1"] == "not eligible: Modality is SR, not CT"

"""Default segmenter on osteoporotic phantoms (issue 9): marrow of 30-90 HU, a thin cortex, bright endplates.

Truth comes from :func:`analysis.imaging.phantom.make_spine_phantom` with ``cortical_mm`` 0.5-1 mm (painted
one voxel thick at its partial-volume HU) and 1.5 mm endplates, marrow HU set per level, noise SD 20 HU.
Before issue 9 (anatomy-0.7) such bodies were split at a slice where the faint ring did not close and partly
lost (the issue's real osteoporotic lumbar spine: one body split, the others mostly missed). Every body must
be found whole (one piece covering nearly all of it), named right or not at all, and measured.
"""

import numpy as np
import pytest
from scipy import ndimage

from analysis.imaging.phantom import make_spine_phantom
from analysis.measurement import measured_roi
from analysis.segmentation.levels import LEVEL_OF_LABEL, VERSE_LABEL
from analysis.segmentation.spine import segment_vertebrae

# Marrow HU per level in the range (30-90 HU), set per case.
CASES = {
    # spacing (dz, dy, dx) mm, marrow HU per level, cortex mm, noise seed.
    # 3 mm voxels: the 0.5 mm cortex reads about 150 HU; the sacrum below names the levels.
    "3mm_L2-S1": ((3.0, 3.0, 3.0), {"L2": 45.0, "L3": 90.0, "L4": 30.0, "L5": 60.0, "S1": 80.0}, 0.5, 0),
    # 3 mm slices with 1 mm pixels, the lowest ribs in view. In one slice of L2 (30 HU) the faint ring
    # does not close: anatomy-0.7 kept 22 % of L2 (the two slices below the gap were dropped).
    "3x1x1_T11-L3": ((3.0, 1.0, 1.0), {"T11": 90.0, "T12": 70.0, "L1": 50.0, "L2": 30.0, "L3": 60.0}, 0.5, 1),
    # 1 mm slices (1.5 mm pixels, the working grid itself): the thoracolumbar junction, 1 mm cortex.
    "1x1.5x1.5_T11-L2": ((1.0, 1.5, 1.5), {"T11": 85.0, "T12": 40.0, "L1": 65.0, "L2": 30.0}, 1.0, 0),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    spacing, marrow, cortex, seed = CASES[request.param]
    phantom = make_spine_phantom(spacing=spacing, levels=tuple(marrow), noise_sd=20.0, random_state=seed,
                                 trabecular_hu=marrow, cortical_mm=cortex, endplate_mm=1.5)
    return phantom, segment_vertebrae(phantom.volume)


def _bodies(phantom):
    return [LEVEL_OF_LABEL[int(v)] for v in np.unique(phantom.body_labels) if v]


def test_every_body_is_found_whole(case):
    # Truth: the phantom's body masks. The label covering most of each body matches it with Dice >= 0.94
    # (measured 0.942-0.953 at 3 mm voxels, 0.965-0.988 finer; a body split at a missing slice or lost
    # scores 0.3-0.8) and is one connected piece (not split where the faint cortex did not close).
    phantom, result = case
    for name in _bodies(phantom):
        truth = phantom.body_labels == VERSE_LABEL[name]
        values, counts = np.unique(result.labels[truth & (result.labels > 0)], return_counts=True)
        assert len(values), f"{name} not found"
        ours = result.labels == values[np.argmax(counts)]
        dice = 2 * (ours & truth).sum() / (ours.sum() + truth.sum())
        assert dice >= 0.94, (name, dice)
        _, pieces = ndimage.label(ours)
        assert pieces == 1, (name, pieces)


def test_levels_are_right_or_withheld(case):
    # Every label we write lies mostly on the body of that level, or its confidence is below 0.5.
    phantom, result = case
    for value in np.unique(result.labels):
        if value == 0:
            continue
        truth = phantom.body_labels[result.labels == value]
        values, counts = np.unique(truth[truth > 0], return_counts=True)
        name = LEVEL_OF_LABEL[int(value)]
        if not len(values) or values[np.argmax(counts)] != value:
            assert result.level_confidence.get(name, 0.0) < 0.5, (name, result.level_confidence)
    # Each case has an anchor in view (the last rib with the rib-free L1 below, or the sacrum): every
    # body is named, and named right.
    for name in _bodies(phantom):
        truth = phantom.body_labels == VERSE_LABEL[name]
        values, counts = np.unique(result.labels[truth & (result.labels > 0)], return_counts=True)
        assert len(values) and LEVEL_OF_LABEL[int(values[np.argmax(counts)])] == name, name
        assert result.level_confidence[name] >= 0.5


@pytest.mark.parametrize("roi", ["spec_erosion", "mid_body"])
def test_marrow_hu_is_measured(case, roi):
    # Truth: the marrow HU painted per level; noise SD 20 HU, SE = 20 / sqrt(ROI voxels). The mid-body ROI
    # option reads it to within 3 HU plus 3 SE and never beyond 5 HU; the default SPEC erosion, which keeps
    # more of the faint rim, within 6 HU (both were 8 HU flat). Measured (anatomy-0.8): mid-body worst
    # +4.1 HU (L4, 3 mm, 524 voxels), +3.5 (T12, 3x1x1 mm, 2675 voxels: the faint 0.5 mm ring partly inside
    # the ROI), within 0.3 HU at 1 mm slices; SPEC erosion worst +5.05 HU (L4, 3 mm, 735 voxels).
    phantom, result = case
    errors = {}
    for name in _bodies(phantom):
        mask = measured_roi(phantom.volume, result.labels == VERSE_LABEL[name], roi=roi)
        n = int(mask.sum())
        assert n >= 30, name
        errors[name] = float(phantom.volume.array[mask].mean()) - phantom.trabecular_hu[name]
        bound = 6.0 if roi == "spec_erosion" else min(5.0, 3.0 + 3 * 20.0 / np.sqrt(n))
        assert abs(errors[name]) <= bound, (name, n, errors)

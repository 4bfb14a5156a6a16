"""Trabecular ROI: the centred ellipsoidal erosion of SPEC section 2, and its reference values on real CT.

``measure_levels`` measures the mid-body ROI by default (tests/analysis/test_mid_body_roi.py); the SPEC
erosion alone is ``roi="spec_erosion"``, which the reference values here are for."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from analysis.imaging.volume import load_nifti
from analysis.measurement import ellipsoid_structure, measure_levels, trabecular_roi
from analysis.segmentation.external import from_verse, restrict_to_body

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TOTALSEG = DATA / "totalseg"


def brute_force_element(spacing, erosion_mm):
    """SPEC section 2 literally: all offsets (k, j, i) with sum((offset * spacing / E)^2) <= 1."""
    reach = [int(erosion_mm / s) + 2 for s in spacing]
    offsets = [
        o
        for o in itertools.product(*(range(-r, r + 1) for r in reach))
        if sum((o[a] * spacing[a] / erosion_mm) ** 2 for a in range(3)) <= 1.0
    ]
    return offsets


def brute_force_erosion(mask, spacing, erosion_mm):
    """A voxel stays when every offset of the element lands on the mask; outside the image is background."""
    offsets = brute_force_element(spacing, erosion_mm)
    out = np.zeros_like(mask)
    for z, y, x in zip(*np.nonzero(mask)):
        keep = True
        for dz, dy, dx in offsets:
            p = (z + dz, y + dy, x + dx)
            if not all(0 <= p[a] < mask.shape[a] for a in range(3)) or not mask[p]:
                keep = False
                break
        out[z, y, x] = keep
    return out


@pytest.mark.parametrize(
    "spacing, erosion_mm",
    [((1.25, 0.7, 0.7), 3.0), ((3.0, 1.0, 1.0), 3.0), ((2.5, 0.8, 0.6), 3.0), ((3.0, 3.0, 3.0), 3.0),
     ((0.5, 0.9, 1.3), 2.2), ((1.0, 1.0, 1.0), 4.0)],
)
def test_structuring_element_is_exactly_the_spec_ellipsoid(spacing, erosion_mm):
    element = ellipsoid_structure(spacing, erosion_mm)
    # Centred: odd size in every axis.
    assert all(n % 2 == 1 for n in element.shape)
    centre = np.array(element.shape) // 2
    got = {tuple(int(v) for v in o) for o in np.argwhere(element) - centre}
    assert got == set(brute_force_element(spacing, erosion_mm))


def test_element_at_3mm_isotropic_is_the_centre_and_its_six_face_neighbours():
    # Hand computation: with 3 mm voxels and E = 3 mm, offset 1 along one axis gives exactly 1 (kept),
    # a diagonal gives 2 (dropped).
    element = ellipsoid_structure((3.0, 3.0, 3.0), 3.0)
    assert element.shape == (3, 3, 3)
    assert element.sum() == 7
    assert element[1, 1, 1] and element[0, 1, 1] and element[1, 0, 1] and element[1, 1, 0]
    assert not element[0, 0, 1]


@pytest.mark.parametrize("spacing", [(1.25, 0.7, 0.7), (3.0, 1.0, 1.0), (2.0, 0.9, 1.3)])
def test_roi_equals_brute_force_erosion_including_at_the_volume_edge(spacing):
    rng = np.random.default_rng(7)
    shape = (14, 22, 20)
    # An irregular blob (ellipsoid plus random bumps) that touches the z = 0 face and the x = max face.
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    blob = ((z - 3) * spacing[0] / 14) ** 2 + ((y - 11) * spacing[1] / 9) ** 2 + ((x - 14) * spacing[2] / 9) ** 2 <= 1
    blob |= rng.random(shape) > 0.97
    assert blob[0].any() and blob[:, :, -1].any()
    expected = brute_force_erosion(blob, spacing, 3.0)
    np.testing.assert_array_equal(trabecular_roi(blob, spacing, 3.0), expected)


def test_zero_erosion_is_the_body_itself_and_empty_stays_empty():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1:4, 2:5, 1:6] = True
    np.testing.assert_array_equal(trabecular_roi(mask, (1, 1, 1), 0.0), mask)
    assert not trabecular_roi(np.zeros_like(mask), (1, 1, 1), 3.0).any()


@pytest.fixture(scope="module")
def reference_bodies():
    ct = load_nifti(TOTALSEG / "example_ct.nii.gz")
    vertebrae = from_verse(TOTALSEG / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz", like=ct)
    body = load_nifti(TOTALSEG / "spine_report" / "totalseg_vertebrae_body.nii.gz").array
    return ct, restrict_to_body(vertebrae, body, body_label=1)


def test_reference_mean_hu_of_l1_to_l5_with_the_centred_3mm_erosion(reference_bodies):
    ct, bodies = reference_bodies
    measurements = measure_levels(ct, bodies, erosion_mm=3.0, roi="spec_erosion")
    # Expected values: shared/data/README.md (pp_refined x body label 1, centred 3 mm erosion).
    expected = {"L1": 117.03, "L2": 118.17, "L3": 113.77, "L4": 117.68, "L5": 126.82}
    for level, mean_hu in expected.items():
        assert measurements[level].mean_hu == pytest.approx(mean_hu, abs=0.005), level


def test_reference_body_volumes_match_totalsegmentator_spine_report(reference_bodies):
    ct, bodies = reference_bodies
    measurements = measure_levels(ct, bodies)
    # Expected values: TotalSegmentator's own spine_report.json (vertebrae_L*_volume_ml, same body masks).
    report = json.loads((TOTALSEG / "spine_report" / "spine_report.json").read_text())["results"]
    for level in ("L1", "L2", "L3", "L4", "L5"):
        assert measurements[level].body_volume_ml == pytest.approx(report[f"vertebrae_{level}_volume_ml"], abs=0.006)


def test_per_level_roi_equals_brute_force_on_the_reference_bodies(reference_bodies):
    ct, bodies = reference_bodies
    measurements = measure_levels(ct, bodies, roi="spec_erosion")
    for level, label in (("L1", 20), ("L5", 24)):
        mask = bodies == label
        box = tuple(slice(max(a.min() - 1, 0), a.max() + 2) for a in np.nonzero(mask))
        roi = brute_force_erosion(mask[box], ct.spacing, 3.0)
        assert measurements[level].roi_voxels == roi.sum()
        assert measurements[level].mean_hu == pytest.approx(ct.array[box][roi].mean(), abs=1e-9)

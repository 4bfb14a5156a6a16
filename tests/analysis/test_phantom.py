"""Synthetic spine phantom: exact labels, recoverable trabecular HU, anatomy (12 rib pairs), file output."""

import numpy as np
import pytest
from scipy import ndimage

from analysis.imaging.phantom import (
    CORTICAL,
    PHANTOM_LEVELS,
    SACRUM_LABEL,
    TISSUE_HU,
    TRABECULAR,
    make_spine_phantom,
)
from analysis.imaging.volume import load_nifti, load_volume
from analysis.measurement import measure_levels
from analysis.segmentation.levels import VERSE_LABEL

CONFIGS = [
    # (spacing (dz, dy, dx) mm, orientation of (i, j, k), levels)
    ((1.25, 0.7, 0.7), "LPS", ("T11", "T12", "L1", "L2")),
    ((3.0, 1.0, 1.0), "RAS", ("T10", "T11", "T12", "L1", "L2", "L3")),
    ((1.0, 1.0, 1.0), "LSP", ("T4", "T5", "T6")),
    ((2.0, 0.9, 0.9), "RAI", ("L2", "L3", "L4", "L5")),
    ((3.0, 3.0, 3.0), "LPI", PHANTOM_LEVELS),
]


@pytest.mark.parametrize("spacing, orientation, levels", CONFIGS)
def test_noise_free_roi_holds_only_trabecular_bone_of_the_true_hu(spacing, orientation, levels):
    phantom = make_spine_phantom(spacing=spacing, orientation=orientation, levels=levels, noise_sd=0.0)
    measurements = measure_levels(phantom.volume, phantom.body_labels)
    body_levels = [name for name in levels if name != "S1"]
    assert list(measurements) == body_levels
    for name in body_levels:
        m = measurements[name]
        # Known answer: the phantom is piecewise constant, so a pure trabecular ROI reads the truth exactly.
        assert m.mean_hu == phantom.trabecular_hu[name]
        assert m.sd_hu == 0.0
        assert m.flags == []
        # The body label is exactly the cortical shell plus the core of that level, nothing else.
        body = phantom.body_labels == VERSE_LABEL[name]
        codes = set(np.unique(phantom.tissue[body]).tolist())
        assert codes <= {CORTICAL, TRABECULAR + VERSE_LABEL[name]}
        values = set(np.unique(phantom.volume.array[body]).tolist())
        assert values <= {TISSUE_HU["cortical"], phantom.trabecular_hu[name]}
    # No voxel of that tissue lies outside the body label.
    assert not np.isin(phantom.tissue[phantom.body_labels == 0], [TRABECULAR + VERSE_LABEL[n] for n in body_levels]).any()


@pytest.mark.parametrize("spacing, orientation, levels", CONFIGS[:4])
def test_mean_roi_hu_within_1_hu_of_truth_at_noise_sd_20(spacing, orientation, levels):
    phantom = make_spine_phantom(spacing=spacing, orientation=orientation, levels=levels, noise_sd=20.0,
                                 random_state=11)
    measurements = measure_levels(phantom.volume, phantom.body_labels)
    for name, m in measurements.items():
        # The requirement (issue 5): within 1 HU. These ROIs hold >= 1500 voxels, so the standard error
        # of the mean is <= 20 / sqrt(1500) = 0.52 HU.
        assert m.roi_voxels >= 1500
        assert abs(m.mean_hu - phantom.trabecular_hu[name]) <= 1.0, name
        assert m.sd_hu == pytest.approx(20.0, rel=0.1)


def test_coarse_3mm_phantom_mean_within_four_standard_errors():
    # At 3 mm the thoracic ROIs hold only ~50-800 voxels: 1 HU is not reachable with SD 20 noise,
    # but the error must stay within the statistics of the mean (4 SE).
    phantom = make_spine_phantom(spacing=(3.0, 3.0, 3.0), noise_sd=20.0, random_state=3)
    for name, m in measure_levels(phantom.volume, phantom.body_labels).items():
        assert abs(m.mean_hu - phantom.trabecular_hu[name]) <= 4 * 20.0 / np.sqrt(m.roi_voxels), name


def test_orientation_only_reorders_voxels():
    levels = ("T12", "L1")
    lps = make_spine_phantom(spacing=(2.0, 1.5, 1.5), orientation="LPS", levels=levels, noise_sd=0.0)
    ras = make_spine_phantom(spacing=(2.0, 1.5, 1.5), orientation="RAS", levels=levels, noise_sd=0.0)
    # LSP: i -> L, j -> S, k -> P, so spacing (dk, dj, di) = (dP, dS, dL).
    lsp = make_spine_phantom(spacing=(1.5, 2.0, 1.5), orientation="LSP", levels=levels, noise_sd=0.0)
    flipped = (slice(None), slice(None, None, -1), slice(None, None, -1))
    for name in ("body_labels", "vertebra_labels", "rib_labels", "tissue"):
        np.testing.assert_array_equal(getattr(ras, name), getattr(lps, name)[flipped])
        np.testing.assert_array_equal(getattr(lsp, name), getattr(lps, name).transpose(1, 0, 2))
    np.testing.assert_array_equal(ras.volume.array, lps.volume.array[flipped])
    # Same voxel, same place in patient space.
    np.testing.assert_allclose(ras.volume.index_to_lps([3, 4, 5]), lps.volume.index_to_lps(
        [3, lps.volume.shape[1] - 1 - 4, lps.volume.shape[2] - 1 - 5]))
    np.testing.assert_allclose(lsp.volume.index_to_lps([3, 4, 5]), lps.volume.index_to_lps([4, 3, 5]))


@pytest.fixture(scope="module")
def whole_spine():
    return make_spine_phantom(spacing=(2.0, 2.0, 2.0), noise_sd=20.0)


def test_twelve_rib_pairs_on_t1_to_t12(whole_spine):
    ribs = whole_spine.rib_labels
    # Anatomy: 12 pairs, carried by T1 (label 8) ... T12 (label 19), T12 the last rib-bearing vertebra.
    assert sorted(np.unique(ribs[ribs > 0]).tolist()) == list(range(VERSE_LABEL["T1"], VERSE_LABEL["T12"] + 1))
    lps = whole_spine.volume
    for label in range(VERSE_LABEL["T1"], VERSE_LABEL["T12"] + 1):
        components, count = ndimage.label(ribs == label, structure=np.ones((3, 3, 3)))
        assert count == 2, label
        # One on each side of the patient (x > 0 is left in LPS).
        sides = sorted(np.sign(lps.index_to_lps(np.argwhere(components == c).mean(axis=0))[0]) for c in (1, 2))
        assert sides == [-1.0, 1.0]


def test_rib_heads_articulate_with_their_own_vertebra_across_a_joint_space(whole_spine):
    spacing = whole_spine.volume.spacing
    vertebrae = whole_spine.vertebra_labels
    distance, nearest = ndimage.distance_transform_edt(vertebrae == 0, sampling=spacing, return_indices=True)
    for label in range(VERSE_LABEL["T1"], VERSE_LABEL["T12"] + 1):
        rib = np.argwhere(whole_spine.rib_labels == label)
        d = distance[tuple(rib.T)]
        closest = rib[np.argmin(d)]
        nearest_label = vertebrae[tuple(nearest[:, closest[0], closest[1], closest[2]])]
        # A joint space (the rib never touches bone of the spine) of a few mm, at its own vertebra.
        assert 1.5 <= d.min() <= 6.0, label
        assert nearest_label == label


def test_levels_stack_cranio_caudally_with_growing_bodies(whole_spine):
    measurements = measure_levels(whole_spine.volume, whole_spine.body_labels)
    assert list(measurements) == [n for n in PHANTOM_LEVELS if n != "S1"]
    z = [m.centroid_mm[2] for m in measurements.values()]
    assert all(a > b for a, b in zip(z, z[1:]))  # LPS z points to the head
    dz = whole_spine.volume.spacing[0]
    heights = {n: np.ptp(np.nonzero((whole_spine.body_labels == VERSE_LABEL[n]).any(axis=(1, 2)))[0]) * dz + dz
               for n in ("C7", "T1", "T6", "T12", "L3")}
    assert heights["C7"] < heights["T6"] < heights["T12"] < heights["L3"]
    assert all(12.0 <= h <= 30.0 for h in heights.values())
    assert (whole_spine.vertebra_labels == SACRUM_LABEL).any() and not (whole_spine.body_labels == SACRUM_LABEL).any()


def test_tissues_present_with_their_hu():
    phantom = make_spine_phantom(spacing=(3.0, 3.0, 3.0), levels=("T8", "T9"), noise_sd=0.0)
    values = set(np.unique(phantom.volume.array).tolist())
    for tissue in ("air", "fat", "soft_tissue", "lung", "disc", "canal", "posterior", "cortical", "rib"):
        assert TISSUE_HU[tissue] in values, tissue


def test_written_as_nifti_and_dicom_reads_back_identically(tmp_path):
    phantom = make_spine_phantom(spacing=(2.0, 1.5, 1.5), levels=("L1", "L2"), noise_sd=20.0, random_state=5)
    phantom.save_nifti(tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz")
    ct = load_nifti(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(ct.array, phantom.volume.array)
    np.testing.assert_allclose(ct.affine, phantom.volume.affine, atol=1e-4)
    np.testing.assert_array_equal(load_nifti(tmp_path / "labels.nii.gz").array, phantom.body_labels)
    phantom.save_dicom(tmp_path / "dicom")
    series = load_volume(tmp_path / "dicom")
    np.testing.assert_array_equal(series.array, phantom.volume.array)
    np.testing.assert_allclose(series.affine, phantom.volume.affine, atol=1e-4)


# -- QA flags of the per-level measurement, on phantoms whose truth is known ---------------------------
@pytest.fixture(scope="module")
def lumbar():
    # L3 made 100 HU denser than its neighbours (a sclerotic vertebra): an outlier by construction.
    return make_spine_phantom(spacing=(2.0, 1.0, 1.0), levels=("T11", "T12", "L1", "L2", "L3", "L4", "L5"),
                              trabecular_hu={"L3": 260.0}, noise_sd=20.0, random_state=2)


def test_hu_outlier_flags_only_the_level_far_from_its_neighbours(lumbar):
    measurements = measure_levels(lumbar.volume, lumbar.body_labels)
    assert [name for name, m in measurements.items() if "hu_outlier" in m.flags] == ["L3"]


def test_missing_and_duplicated_levels(lumbar):
    from analysis.measurement import case_flags, measurement_json

    labels = lumbar.body_labels.copy()
    labels[labels == VERSE_LABEL["L1"]] = 0  # L1 not segmented
    labels[labels == VERSE_LABEL["L4"]] = VERSE_LABEL["L5"]  # two vertebrae called L5
    measurements = measure_levels(lumbar.volume, labels)
    assert "duplicated_level" in measurements["L5"].flags
    assert "duplicated_level" not in measurements["L2"].flags
    assert case_flags(measurements) == ["duplicated_level", "missing_level"]
    doc = measurement_json(measurements, {"total": 1.0})
    assert doc["missing_levels"] == ["L1", "L4"] and doc["flags"] == ["duplicated_level", "missing_level"]


def test_contrast_and_low_confidence_flags(lumbar):
    from analysis.measurement import case_flags

    measurements = measure_levels(lumbar.volume, lumbar.body_labels, contrast=True,
                                  level_confidence={"T11": 0.4, "T12": 0.95})
    assert all("contrast_exam" in m.flags for m in measurements.values())
    assert "low_level_confidence" in measurements["T11"].flags
    assert "low_level_confidence" not in measurements["T12"].flags
    assert case_flags(measurements, ["level_disagreement"]) == ["contrast_exam", "level_disagreement",
                                                                "low_level_confidence"]


def test_body_cut_by_the_volume_edge_is_flagged_and_its_roi_keeps_away_from_the_cut(lumbar):
    from analysis.imaging.volume import Volume

    labels = lumbar.body_labels
    # Keep the slices from L5's mid-height upwards: L5 is cut by the first slice of the cropped volume
    # (array slice index increases towards the head in this LPS phantom).
    rows = np.nonzero((labels == VERSE_LABEL["L5"]).any(axis=(1, 2)))[0]
    start = int(rows[len(rows) // 2])
    affine = lumbar.volume.affine.copy()
    affine[:3, 3] = lumbar.volume.index_to_lps([start, 0, 0])
    cropped = Volume(lumbar.volume.array[start:], affine)
    measurements = measure_levels(cropped, labels[start:])
    assert measurements["L5"].flags == ["touches_volume_edge"]
    assert measurements["L4"].flags == []
    # Erosion from the cut: with 2 mm slices the element reaches one slice (2 mm <= 3 mm < 4 mm), so the
    # first imaged slice (next to the unimaged, background slice -1) leaves the ROI and the second stays.
    from analysis.measurement import trabecular_roi

    roi = trabecular_roi(labels[start:] == VERSE_LABEL["L5"], cropped.spacing, 3.0)
    assert not roi[0].any() and roi[1].any()
    # A sliver of a body (only its top 2 slices) is too small to measure.
    top = int(rows[-1]) - 1
    affine[:3, 3] = lumbar.volume.index_to_lps([top, 0, 0])
    sliver = measure_levels(Volume(lumbar.volume.array[top:], affine), labels[top:])
    assert sliver["L5"].flags == ["roi_too_small", "touches_volume_edge"] and sliver["L5"].mean_hu is None

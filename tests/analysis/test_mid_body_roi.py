"""The measured trabecular ROI (``roi="mid_body"``): the SPEC erosion kept clear of both endplates.

Known answers come from bodies built here with an exact slice profile: a 0.1 mm profile along the body axis
(disc, 1 mm cortical endplate, marrow, endplate, disc) averaged into 2.5 mm slices, so the HU of every slice
is known, including the partial-volume slices that hold part of an endplate.
"""

import numpy as np
import pytest

from analysis.imaging.volume import Volume
from analysis.measurement import (
    ENDPLATE_MARGIN_MM,
    ROI_MID_BODY,
    ROI_SPEC_EROSION,
    cranio_caudal_axis,
    measure_levels,
    measured_roi,
    mid_body_roi,
    trabecular_roi,
)

MARROW, DISC, ENDPLATE = 100.0, 80.0, 1200.0
SLICE_MM, PIXEL_MM = 2.5, 0.7


def _body(n_slices=14, extra_below=1, extra_above=1, noise_sd=0.0, seed=0):
    """A cylindrical body (radius 14 mm) on 2.5 mm slices, axis 0 running head-foot.

    Fine profile (0.1 mm steps) along axis 0: disc up to 3 mm, endplate 3-4 mm, marrow 4-24 mm, endplate
    24-25 mm, disc above. Slice k covers [2.5 k, 2.5 k + 2.5) mm and reads the mean of the profile over it
    (a box slice profile). The body mask is slices 1-9 (the two endplate slices and the marrow between)
    plus ``extra_below`` / ``extra_above`` slices beyond them, as a mask that reaches into the disc does.
    Returns (hu, mask, pure): ``pure`` marks the slices that hold marrow only.
    """
    fine = np.arange(0.05, n_slices * SLICE_MM, 0.1)
    profile = np.full(fine.shape, DISC)
    profile[(fine >= 4.0) & (fine < 24.0)] = MARROW
    profile[((fine >= 3.0) & (fine < 4.0)) | ((fine >= 24.0) & (fine < 25.0))] = ENDPLATE
    slices = profile.reshape(n_slices, -1).mean(axis=1)
    size = 50
    y, x = np.mgrid[:size, :size]
    disk = ((y - size / 2) * PIXEL_MM) ** 2 + ((x - size / 2) * PIXEL_MM) ** 2 <= 14.0 ** 2
    hu = np.where(disk[None], slices[:, None, None], 0.0)
    if noise_sd:
        hu = hu + np.random.default_rng(seed).normal(0.0, noise_sd, hu.shape)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[1 - extra_below : 10 + extra_above] = disk
    starts = np.arange(n_slices) * SLICE_MM
    pure = (starts >= 4.0) & (starts + SLICE_MM <= 24.0)
    return hu.astype(np.float32), mask, pure


def _volume(hu, spacing=(SLICE_MM, PIXEL_MM, PIXEL_MM)):
    # Axis 0 along +S, axis 1 along +P, axis 2 along +L (LPS); the affine's columns are (x, y, z) = axes 2, 1, 0.
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    return Volume(hu, affine)


def test_the_partial_volume_slices_are_what_the_profile_says():
    # Hand computed: slice 1 covers 2.5-5 mm: 0.5 mm disc, 1 mm endplate, 1 mm marrow -> (40 + 1200 + 100) / 2.5.
    hu, mask, pure = _body()
    assert hu[1, 25, 25] == pytest.approx((0.5 * DISC + 1.0 * ENDPLATE + 1.0 * MARROW) / 2.5, abs=1e-3)
    assert hu[9, 25, 25] == pytest.approx((1.5 * MARROW + 1.0 * ENDPLATE) / 2.5, abs=1e-3)
    assert list(np.flatnonzero(pure)) == [2, 3, 4, 5, 6, 7, 8]


def test_spec_erosion_alone_keeps_an_endplate_slice_and_reads_high():
    # The 3 mm erosion removes one 2.5 mm slice at each end of the mask: slice 9 (540 HU: a third of it is
    # endplate) stays in, so the ROI reads far above the marrow's 100 HU. This is the bias seen on the
    # real 2.5 mm chest CT (single slices of 309-466 HU inside L1's and L3's ROIs).
    hu, mask, _ = _body()
    roi = trabecular_roi(mask, (SLICE_MM, PIXEL_MM, PIXEL_MM))
    assert roi[9].any()
    assert hu[roi].mean() > MARROW + 40.0


def test_mid_body_roi_reads_the_marrow_exactly():
    # Mask slices 0-10; column height 27.5 mm, margin max(3 mm + 2.5 mm, 27.5 / 4 mm) = 6.875 mm from each
    # end: a voxel centre (k + 0.5) * 2.5 mm from the end needs k >= 3, so slices 3-7 stay: pure marrow.
    hu, mask, pure = _body()
    roi = mid_body_roi(mask, hu, (SLICE_MM, PIXEL_MM, PIXEL_MM))
    kept = np.flatnonzero(roi.any(axis=(1, 2)))
    assert list(kept) == [3, 4, 5, 6, 7]
    assert pure[kept].all()
    assert hu[roi].mean() == pytest.approx(MARROW, abs=1e-4)
    # In-plane the 3 mm erosion of SPEC section 2 still applies.
    assert not (roi & ~trabecular_roi(mask, (SLICE_MM, PIXEL_MM, PIXEL_MM))).any()


def test_plateau_drops_an_endplate_slice_that_the_margin_left_in():
    # The mask reaches three slices beyond the upper endplate (slices 0-12): margin 32.5 / 4 = 8.1 mm,
    # k >= 3, so slices 3-9 pass the margin and slice 9 (540 HU, a third endplate) with them. Its mean
    # is 440 HU off the other slices': the plateau test drops it and the ROI reads the marrow.
    hu, mask, _ = _body(extra_above=3)
    spacing = (SLICE_MM, PIXEL_MM, PIXEL_MM)
    roi = mid_body_roi(mask, hu, spacing)
    assert list(np.flatnonzero(roi.any(axis=(1, 2)))) == [3, 4, 5, 6, 7, 8]
    assert hu[roi].mean() == pytest.approx(MARROW, abs=1e-4)


def test_noise_alone_drops_no_marrow_slice():
    # Noise SD 20 HU over ~900 voxels a slice: slice means scatter by < 1 HU, far inside PLATEAU_HU.
    hu, mask, _ = _body(noise_sd=20.0, seed=3)
    spacing = (SLICE_MM, PIXEL_MM, PIXEL_MM)
    roi = mid_body_roi(mask, hu, spacing)
    assert list(np.flatnonzero(roi.any(axis=(1, 2)))) == [3, 4, 5, 6, 7]
    assert abs(hu[roi].mean() - MARROW) < 3 * 20.0 / np.sqrt(roi.sum())


def test_a_short_column_keeps_its_central_slice():
    # Three 5 mm slices: the margin (3 mm + 5 mm) would leave nothing; the central slice of each column
    # is always kept so that a small body on thick slices still has an ROI.
    mask = np.zeros((5, 30, 30), dtype=bool)
    mask[1:4, 5:25, 5:25] = True
    hu = np.where(mask, MARROW, 0.0)
    roi = mid_body_roi(mask, hu, (5.0, 1.0, 1.0))
    assert list(np.flatnonzero(roi.any(axis=(1, 2)))) == [2]


def test_a_body_cut_by_the_scan_keeps_no_endplate_margin_at_the_cut():
    # The scan starts inside the body (slices 3-10 of the body kept, array slice 0 = its slice 3): the cut
    # is no endplate, so only the SPEC erosion applies there (one 2.5 mm slice), while the upper end
    # keeps the endplate margin (3 mm + 2.5 mm: k >= 2 from slice 10, the mask's last).
    hu, mask, _ = _body()
    hu, mask = hu[3:], mask[3:]
    spacing = (SLICE_MM, PIXEL_MM, PIXEL_MM)
    roi = mid_body_roi(mask, hu, spacing, cut=(True, False))
    kept = np.flatnonzero(roi.any(axis=(1, 2))) + 3
    assert kept[0] == 4 and kept[-1] == 8
    assert hu[roi].mean() == pytest.approx(MARROW, abs=1e-4)
    # measured_roi finds the cut from the volume itself.
    volume = _volume(hu)
    np.testing.assert_array_equal(measured_roi(volume, mask, roi=ROI_MID_BODY), roi)


def test_measured_roi_follows_the_head_foot_axis_of_the_affine():
    # The same body stored with its head-foot axis as array axis 1 (coronal slices) gives the same ROI,
    # transposed: the margin is taken along the patient's S axis, not along array axis 0.
    hu, mask, _ = _body()
    axial = _volume(hu)
    assert cranio_caudal_axis(axial.affine) == 0
    hu_c, mask_c = np.transpose(hu, (1, 0, 2)), np.transpose(mask, (1, 0, 2))
    # Axis 0 along +P (0.7 mm), axis 1 along +S (2.5 mm), axis 2 along +L: columns (x, y, z) = axes 2, 1, 0.
    affine = np.zeros((4, 4))
    affine[0, 0], affine[2, 1], affine[1, 2], affine[3, 3] = PIXEL_MM, SLICE_MM, PIXEL_MM, 1.0
    coronal = Volume(hu_c, affine)
    assert coronal.spacing == pytest.approx((PIXEL_MM, SLICE_MM, PIXEL_MM))
    assert cranio_caudal_axis(coronal.affine) == 1
    np.testing.assert_array_equal(measured_roi(coronal, mask_c, roi=ROI_MID_BODY),
                                  np.transpose(measured_roi(axial, mask, roi=ROI_MID_BODY), (1, 0, 2)))


def test_measure_levels_measures_the_spec_erosion_by_default_and_mid_body_on_request():
    hu, mask, _ = _body(noise_sd=20.0, seed=5)
    volume = _volume(hu)
    labels = mask.astype(np.uint8) * 20  # L1
    roi = measured_roi(volume, mask, roi=ROI_MID_BODY)
    mid = measure_levels(volume, labels, roi=ROI_MID_BODY)["L1"]
    assert mid.roi_voxels == roi.sum()
    assert mid.mean_hu == pytest.approx(float(hu[roi].astype(np.float64).mean()), abs=1e-9)
    spec = measure_levels(volume, labels)["L1"]  # SPEC section 2: the eroded mask is the ROI
    assert spec.roi_voxels == trabecular_roi(mask, volume.spacing).sum()
    assert spec.mean_hu > mid.mean_hu + 40.0
    with pytest.raises(ValueError, match="roi must be one of"):
        measure_levels(volume, labels, roi="central")


def test_margin_is_at_least_the_spec_erosion_plus_one_slice():
    # Thin slices (0.5 mm): the margin is 3 mm + 0.5 mm, or a quarter of the body height when larger; no
    # ROI voxel centre lies closer than that to either end of its column.
    mask = np.zeros((60, 30, 30), dtype=bool)
    mask[5:55, 3:27, 3:27] = True  # 50 slices = 25 mm; ROI 18 x 18 voxels a slice, well above 0.5 ml
    hu = np.where(mask, MARROW, 0.0)
    roi = mid_body_roi(mask, hu, (0.5, 1.0, 1.0))
    kept = np.flatnonzero(roi.any(axis=(1, 2)))
    margin = max(ENDPLATE_MARGIN_MM + 0.5, 25.0 / 4)
    assert (kept[0] - 5 + 0.5) * 0.5 >= margin and (kept[0] - 5 - 0.5) * 0.5 < margin
    assert (54 - kept[-1] + 0.5) * 0.5 >= margin


def test_thick_slices_made_from_real_ct_read_what_thin_slices_read():
    # Real CT, reference bodies (example_ct at 3 mm, TotalSegmentator body labels, as in
    # test_trabecular_roi.py). Thick slices are made by averaging pairs of 3 mm slices (a 6 mm box slice
    # profile; the label of a thick slice is that of its lower thin slice). The marrow has not changed, so
    # an ROI that accounts for slice thickness reads at 6 mm what it reads at 3 mm. Measured: mid-body ROI
    # 6 mm minus 3 mm T12 +4.6, L1 +2.8, L2 +6.3, L3 +3.8, L4 +2.1, L5 +8.0 HU; the 3 mm erosion alone at
    # 6 mm reads +8.2 to +30.3 HU above the same thin-slice value (endplates averaged into its slices).
    from pathlib import Path

    from analysis.imaging.volume import load_volume

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalseg"
    ct = load_volume(data / "example_ct.nii.gz")
    ref = load_volume(data / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    body = load_volume(data / "spine_report" / "totalseg_vertebrae_body.nii.gz").array == 1
    labels = np.where(body, ref, 0).astype(np.uint8)
    assert cranio_caudal_axis(ct.affine) == 0
    thin = measure_levels(ct, labels, roi=ROI_MID_BODY)
    n = ct.shape[0] // 2 * 2
    array = ct.array[:n].reshape(n // 2, 2, *ct.shape[1:]).mean(axis=1).astype(np.float32)
    affine = ct.affine.copy()
    affine[:3, 2] *= 2
    affine[:3, 3] = ct.affine[:3, 3] + ct.affine[:3, 2] * 0.5
    thick_ct = Volume(array, affine)
    thick_labels = labels[:n:2]
    thick = measure_levels(thick_ct, thick_labels, roi=ROI_MID_BODY)
    spec = measure_levels(thick_ct, thick_labels, roi=ROI_SPEC_EROSION)
    diffs = {k: thick[k].mean_hu - thin[k].mean_hu for k in thin}
    assert max(abs(d) for d in diffs.values()) <= 12.0, diffs
    assert np.mean([abs(d) for d in diffs.values()]) <= 5.0, diffs
    assert np.mean([spec[k].mean_hu - thin[k].mean_hu for k in thin]) > 15.0

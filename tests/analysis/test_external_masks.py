"""Import of external vertebra masks: TotalSegmentator v2 and VerSe numbering, grid checks, body restriction."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from analysis.imaging.volume import Volume, load_nifti, load_volume, save_nifti
from analysis.segmentation.external import (
    MaskGridError,
    from_totalsegmentator,
    from_verse,
    read_label_table,
    restrict_to_body,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TOTALSEG = DATA / "totalseg"
SPINE = TOTALSEG / "spine_report"


@pytest.fixture(scope="module")
def ct():
    return load_nifti(TOTALSEG / "example_ct.nii.gz")


def raw(path):
    """The file's voxels as (z, y, x), read with nibabel only."""
    return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)


def test_label_table_is_read_from_the_header_extension():
    table = read_label_table(TOTALSEG / "example_seg_fast_force_split.nii.gz")
    # shared/data/README.md: 32 T12, 33 T11, 25 sacrum, 26 S1 in TotalSegmentator v2.
    assert table[32] == "vertebrae_T12" and table[33] == "vertebrae_T11"
    assert table[25] == "sacrum" and table[26] == "vertebrae_S1"
    assert table[5] == "liver"


def test_totalsegmentator_v2_to_verse_numbering(ct):
    labels = from_totalsegmentator(TOTALSEG / "example_seg_fast_force_split.nii.gz", like=ct)
    source = raw(TOTALSEG / "example_seg_fast_force_split.nii.gz")
    # README: vertebrae 33 T11 ... 27 L5 present; VerSe T11 = 18 ... L5 = 24; organs, S1 and sacrum dropped.
    assert sorted(np.unique(labels).tolist()) == [0, 18, 19, 20, 21, 22, 23, 24]
    for v2, verse in ((33, 18), (32, 19), (31, 20), (27, 24)):
        np.testing.assert_array_equal(labels == verse, source == v2)
    assert not labels[np.isin(source, [5, 25, 26])].any()


def test_default_v2_numbering_matches_the_header_table(ct):
    source = raw(SPINE / "totalseg.nii.gz")
    from_header = from_totalsegmentator(SPINE / "totalseg.nii.gz", like=ct)
    # An array carries no header: the built-in v2 numbering must give the same answer.
    np.testing.assert_array_equal(from_totalsegmentator(source, like=ct), from_header)


def test_an_explicit_table_wins_over_the_default_numbering():
    array = np.zeros((2, 2, 2), dtype=np.uint8)
    array[0, 0, 0] = 5
    array[1, 1, 1] = 32
    labels = from_totalsegmentator(array, table={5: "vertebrae_L1", 32: "liver"})
    assert labels[0, 0, 0] == 20 and labels[1, 1, 1] == 0


def test_verse_file_is_read_unchanged_and_a_totalsegmentator_file_is_refused(ct):
    labels = from_verse(SPINE / "totalseg_vertebrae_pp_refined.nii.gz", like=ct)
    np.testing.assert_array_equal(labels, raw(SPINE / "totalseg_vertebrae_pp_refined.nii.gz"))
    with pytest.raises(ValueError, match="totalseg.nii.gz.*not VerSe numbering"):
        from_verse(SPINE / "totalseg.nii.gz", like=ct)


def test_mask_on_another_grid_is_refused_with_the_file_name(ct, tmp_path):
    with pytest.raises(MaskGridError, match="totalseg_vertebrae_pp_refined.nii.gz.*shape"):
        from_verse(SPINE / "totalseg_vertebrae_pp_refined.nii.gz", like=load_nifti(TOTALSEG / "aorta_ct_cropped.nii.gz"))
    affine = ct.affine.copy()
    affine[0, 3] += 1.5  # half a voxel: no voxel centre coincides any more
    path = save_nifti(Volume(raw(SPINE / "totalseg_vertebrae_pp_refined.nii.gz"), affine), tmp_path / "shifted.nii.gz")
    with pytest.raises(MaskGridError, match="shifted.nii.gz.*affine"):
        from_verse(path, like=ct)


def test_same_voxels_stored_flipped_are_reordered_exactly(ct, tmp_path):
    labels = raw(SPINE / "totalseg_vertebrae_pp_refined.nii.gz")
    # Store the mask with its y and z axes reversed (same voxel centres, other order): the affine's
    # row and slice steps change sign and its origin moves to the opposite corner.
    affine = ct.affine.copy()
    ny, nz = ct.shape[1], ct.shape[0]
    affine[:3, 3] = ct.index_to_lps([nz - 1, ny - 1, 0])
    affine[:3, 1] *= -1
    affine[:3, 2] *= -1
    path = save_nifti(Volume(labels[::-1, ::-1, :].copy(), affine), tmp_path / "flipped.nii.gz")
    np.testing.assert_array_equal(from_verse(path, like=ct), labels)


def test_dicom_grid_mask_from_dicom2nifti_lands_on_the_dicom_voxels():
    series = load_volume(TOTALSEG / "example_ct_dicom")
    labels = from_totalsegmentator(TOTALSEG / "example_seg_dicom.nii.gz", like=series)
    source = raw(TOTALSEG / "example_seg_dicom.nii.gz")
    # The file's rows run anterior (its affine's j step is +y in RAS) while the DICOM rows run posterior:
    # the same voxels with the row axis reversed.
    assert nib.aff2axcodes(nib.load(str(TOTALSEG / "example_seg_dicom.nii.gz")).affine)[1] == "A"
    np.testing.assert_array_equal(labels == 19, source[:, ::-1, :] == 32)
    np.testing.assert_array_equal(labels == 18, source[:, ::-1, :] == 33)


def test_verse_sacrum_dropped_t13_refused(ct, tmp_path):
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[10:12, 10:12, 10:12] = 26
    labels[20:22, 20:22, 20:22] = 20
    path = save_nifti(labels, tmp_path / "verse.nii.gz", like=ct)
    out = from_verse(path, like=ct)
    assert sorted(np.unique(out).tolist()) == [0, 20]
    labels[30, 30, 30] = 28
    path = save_nifti(labels, tmp_path / "t13.nii.gz", like=ct)
    with pytest.raises(ValueError, match="t13.nii.gz.*28"):
        from_verse(path, like=ct)


def test_restrict_to_body_keeps_only_body_voxels(ct):
    # Whole vertebrae (body and posterior elements) from TotalSegmentator's vertebrae output.
    vertebrae = from_totalsegmentator(SPINE / "totalseg.nii.gz", like=ct)
    body = raw(SPINE / "totalseg_vertebrae_body.nii.gz")
    bodies = restrict_to_body(vertebrae, body, body_label=1)
    # Known answer: the intersection, voxel by voxel (label 2 = discs is not body).
    np.testing.assert_array_equal(bodies, np.where(body == 1, vertebrae, 0))
    assert (bodies > 0).sum() < (vertebrae > 0).sum()
    np.testing.assert_array_equal(restrict_to_body(vertebrae, body == 1), bodies)

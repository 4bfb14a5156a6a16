"""Volume geometry and NIfTI loading/saving (analysis.imaging.volume)."""

from dataclasses import FrozenInstanceError
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from analysis.imaging.volume import Volume, load_nifti, load_volume, save_nifti

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EXAMPLE_CT = DATA / "totalseg" / "example_ct.nii.gz"


def oblique_volume():
    """A volume whose affine is a rotation (30 deg about z) times spacing (dx, dy, dz) = (0.5, 0.7, 2.0)."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.7, 2.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    return Volume(array, affine, series_uid="1.2.3")


def test_example_ct_loads_with_3mm_spacing_and_ras_to_lps_orientation():
    vol = load_nifti(EXAMPLE_CT)
    img = nib.load(EXAMPLE_CT)
    # README: 122 x 101 x 112 voxels (x, y, z) of 3 mm; our array is (z, y, x).
    assert vol.shape == (112, 101, 122)
    assert vol.spacing == (3.0, 3.0, 3.0)
    assert vol.convention == "RAS"
    # RAS -> LPS flips the signs of the x and y rows of nibabel's affine, nothing else.
    np.testing.assert_array_equal(vol.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine)
    # Voxel (i, j, k) = (7, 5, 3) is at img.affine @ (7, 5, 3, 1) in RAS (nibabel's own definition) ...
    ras = img.affine @ np.array([7, 5, 3, 1.0])
    np.testing.assert_allclose(vol.index_to_source([3, 5, 7]), ras[:3])
    # ... and at (-x, -y, z) in LPS.
    np.testing.assert_allclose(vol.index_to_lps([3, 5, 7]), ras[:3] * [-1, -1, 1])
    # The stored values are the voxels of the file: HU unchanged, only the axis order reversed.
    np.testing.assert_array_equal(vol.array[3, 5, 7], np.asanyarray(img.dataobj)[7, 5, 3])
    # int32 on disk within int16 range -> int16 (exact, half the memory).
    assert vol.array.dtype == np.int16


def test_nifti_round_trip_keeps_affine_and_data_identical(tmp_path):
    out = save_nifti(load_volume(EXAMPLE_CT), tmp_path / "out.nii.gz")
    original, written = nib.load(EXAMPLE_CT), nib.load(out)
    np.testing.assert_array_equal(written.affine, original.affine)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(original.dataobj))
    # And once more through Volume: a second round trip changes nothing either.
    again = load_nifti(out)
    np.testing.assert_array_equal(again.affine, load_nifti(EXAMPLE_CT).affine)
    np.testing.assert_array_equal(again.array, load_nifti(EXAMPLE_CT).array)


def test_scl_slope_and_inter_are_applied(tmp_path):
    raw = np.array([[[0, 1], [2, 3]], [[4, 5], [6, 7]]], dtype=np.int16)  # (x, y, z) on disk
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii")
    vol = load_nifti(tmp_path / "scaled.nii")
    # HU = 2 * raw - 1024, by the NIfTI definition of scl_slope / scl_inter; whole numbers -> int16.
    np.testing.assert_array_equal(vol.array, (2 * raw.astype(int) - 1024).transpose(2, 1, 0))
    assert vol.array.dtype == np.int16


def test_spacing_and_positions_of_an_oblique_affine():
    vol = oblique_volume()
    assert vol.spacing == pytest.approx((2.0, 0.7, 0.5))
    # Hand computation: (k, j, i) = (1, 2, 3) -> origin + R @ (3 * 0.5, 2 * 0.7, 1 * 2.0).
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    local = np.array([1.5, 1.4, 2.0])
    expected = np.array([10.0, -20.0, 30.0]) + np.array([c * local[0] - s * local[1],
                                                         s * local[0] + c * local[1], local[2]])
    np.testing.assert_allclose(vol.index_to_lps([1, 2, 3]), expected)
    # Batched input keeps its leading shape.
    assert vol.index_to_lps(np.zeros((2, 4, 3))).shape == (2, 4, 3)
    # LPS source: reporting in the source convention changes nothing.
    np.testing.assert_allclose(vol.index_to_source([1, 2, 3]), expected)
    np.testing.assert_allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-12)


def test_ras_affine_matches_nibabel_apply_affine_on_transposed_data():
    vol = oblique_volume()
    ras = vol.ras_affine()
    # nibabel sees data[i, j, k] = array[k, j, i]; its affine must give RAS = LPS with x, y negated.
    point = nib.affines.apply_affine(ras, [3, 2, 1])
    np.testing.assert_allclose(point, vol.index_to_lps([1, 2, 3]) * [-1, -1, 1])


def test_label_map_saved_as_uint8_on_the_same_grid(tmp_path):
    vol = load_nifti(EXAMPLE_CT)
    labels = (vol.array > 200).astype(np.int64) * 20  # an "L1" label where the HU say bone
    path = save_nifti(labels, tmp_path / "labels.nii.gz", like=vol)
    img = nib.load(path)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(img.affine, nib.load(EXAMPLE_CT).affine)
    back = load_nifti(path)
    np.testing.assert_array_equal(back.array, labels)


def test_save_refuses_inexact_integer_cast_and_shape_mismatch(tmp_path):
    vol = oblique_volume()
    with pytest.raises(ValueError, match="exactly"):
        save_nifti(vol.array + 0.5, tmp_path / "x.nii.gz", like=vol, dtype=np.int16)
    with pytest.raises(ValueError, match="shape"):
        save_nifti(np.zeros((1, 2, 3)), tmp_path / "x.nii.gz", like=vol)
    with pytest.raises(ValueError, match="like"):
        save_nifti(vol.array, tmp_path / "x.nii.gz")
    # Float HU are stored as float32 and come back unchanged.
    hu = vol.with_array(vol.array.astype(np.float32) / 4)
    np.testing.assert_array_equal(load_nifti(save_nifti(hu, tmp_path / "f.nii.gz")).array, hu.array)


def test_volume_is_immutable_and_validates_its_inputs():
    vol = oblique_volume()
    with pytest.raises(FrozenInstanceError):
        vol.series_uid = "other"
    with pytest.raises(ValueError):
        vol.affine[0, 0] = 5.0  # read-only copy
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((2, 3)), np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        Volume(np.zeros((2, 3, 4)), np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 3, 4)), np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="convention"):
        Volume(np.zeros((2, 3, 4)), np.eye(4), convention="XYZ")
    labels = vol.with_array(np.ones(vol.shape, dtype=np.uint8))
    assert labels.series_uid == vol.series_uid
    np.testing.assert_array_equal(labels.affine, vol.affine)
    with pytest.raises(ValueError, match="shape"):
        vol.with_array(np.ones((1, 1, 1)))


def test_load_volume_dispatches_on_what_the_path_is(tmp_path):
    assert load_volume(EXAMPLE_CT).convention == "RAS"
    from_folder = load_volume(DATA / "lidc-partial")
    assert from_folder.convention == "LPS" and from_folder.shape == (11, 512, 512)
    single = load_volume(DATA / "dicom-syntaxes" / "CT1_UNC")
    assert single.shape == (1, 512, 512)
    with pytest.raises(FileNotFoundError):
        load_volume(tmp_path / "absent.nii.gz")

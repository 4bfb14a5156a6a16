"""Synthetic CT series writer (analysis.imaging.dicom_writer): exact HU and geometry round trips."""

import numpy as np
import pydicom
import pytest
from pydicom import uid

from analysis.imaging.dicom import read_series_folder
from analysis.imaging.dicom_writer import DicomWriteError, write_ct_series
from analysis.imaging.volume import Volume


def phantom(affine=None, seed=0):
    """Random integer HU in [-1024, 3000) on 5 slices of 40 x 36 pixels (non-square on purpose).

    36 pixels: JPEG 2000's default 6 resolution levels need at least 32.
    """
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 3000, size=(5, 40, 36)).astype(np.int16)
    if affine is None:
        affine = np.array([[0.6, 0, 0, -80.0], [0, 0.9, 0, -120.0], [0, 0, 1.25, 40.0], [0, 0, 0, 1]])
    return Volume(array, affine)


def encodable(syntax):
    from pydicom.pixels import get_encoder

    try:
        return get_encoder(syntax).is_available
    except NotImplementedError:
        return False


SYNTAXES = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
            uid.RLELossless, uid.JPEG2000Lossless]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_written_series_reassembles_to_exact_hu_and_affine(tmp_path, syntax):
    vol = phantom()
    paths = write_ct_series(vol, tmp_path, transfer_syntax=syntax)
    assert len(paths) == 5
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in paths} == {
        str(syntax)}
    back = read_series_folder(tmp_path)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16  # slope 1, intercept -1024: exact integers
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)  # tags carry 6 decimals


@pytest.mark.parametrize("syntax", [uid.JPEGLSLossless], ids=lambda s: s.name)
def test_jpeg_ls_round_trips_or_names_the_missing_encoder(tmp_path, syntax):
    vol = phantom()
    if encodable(syntax):  # pyjpegls installed
        write_ct_series(vol, tmp_path, transfer_syntax=syntax)
        np.testing.assert_array_equal(read_series_folder(tmp_path).array, vol.array)
    else:
        with pytest.raises(DicomWriteError, match="JPEG-LS Lossless.*encoder plugin missing.*pyjpegls"):
            write_ct_series(vol, tmp_path, transfer_syntax=syntax)


def test_unsupported_syntax_is_a_clear_error(tmp_path):
    with pytest.raises(DicomWriteError, match=r"JPEG Lossless, Non-Hierarchical.*no encoder"):
        write_ct_series(phantom(), tmp_path, transfer_syntax=uid.JPEGLosslessSV1)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_geometry_tags_follow_the_affine(tmp_path):
    paths = write_ct_series(phantom(), tmp_path)
    ds = pydicom.dcmread(paths[3], stop_before_pixels=True)
    # Slice 3 at origin + 3 * 1.25 mm along z; PixelSpacing is (row spacing, column spacing) = (dy, dx).
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [-80.0, -120.0, 43.75])
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.9, 0.6])
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [1, 0, 0, 0, 1, 0])
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 1.25
    assert (ds.Rows, ds.Columns) == (40, 36)
    assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # HU -1024 is stored as 0, so unsigned storage suffices.
    assert ds.PixelRepresentation == 0 and float(ds.RescaleIntercept) == -1024.0


def test_oblique_geometry_round_trips(tmp_path):
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # 20 degrees about x
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.6, 0.9, 1.25])
    affine[:3, 3] = (5.0, -7.0, 11.0)
    vol = phantom(affine)
    write_ct_series(vol, tmp_path)
    back = read_series_folder(tmp_path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)


def test_descending_slices_come_back_ascending_with_the_same_world_positions(tmp_path):
    affine = np.array([[0.6, 0, 0, 0.0], [0, 0.9, 0, 0.0], [0, 0, -1.25, 40.0], [0, 0, 0, 1]])
    vol = phantom(affine)
    write_ct_series(vol, tmp_path)
    back = read_series_folder(tmp_path)
    # Sorted along the normal (+z): slice order reversed, origin at the last input slice (z = 35 mm).
    np.testing.assert_array_equal(back.array, vol.array[::-1])
    flip_k = np.eye(4)
    flip_k[2, 2], flip_k[2, 3] = -1, 4
    np.testing.assert_allclose(back.affine, affine @ flip_k, atol=1e-6)


def test_non_unit_slope_and_signed_storage_round_trip(tmp_path):
    vol = phantom()
    # Slope 0.5: stored = 2 * (HU + 1024), exact for integer HU; HU then come back as float32.
    write_ct_series(vol, tmp_path / "half", rescale_slope=0.5)
    back = read_series_folder(tmp_path / "half")
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, vol.array)
    # Intercept 0: negative HU need signed storage.
    paths = write_ct_series(vol, tmp_path / "signed", rescale_intercept=0.0)
    assert pydicom.dcmread(paths[0], stop_before_pixels=True).PixelRepresentation == 1
    np.testing.assert_array_equal(read_series_folder(tmp_path / "signed").array, vol.array)


def test_jpeg2000_of_a_tiny_image_is_a_clear_error(tmp_path):
    tiny = Volume(np.zeros((1, 8, 8), dtype=np.int16), np.eye(4))
    with pytest.raises(DicomWriteError, match="encoding as JPEG 2000 Image Compression \\(Lossless Only\\) failed"):
        write_ct_series(tiny, tmp_path, transfer_syntax=uid.JPEG2000Lossless)


def test_unrepresentable_hu_is_an_error(tmp_path):
    vol = phantom().with_array(np.full((5, 40, 36), 70000, dtype=np.int32))
    with pytest.raises(DicomWriteError, match="does not fit 16 bits"):
        write_ct_series(vol, tmp_path)


def test_uids_contrast_and_extra_tags(tmp_path):
    vol = phantom()
    a = write_ct_series(vol, tmp_path / "a", contrast=True, extra_tags={"SeriesDescription": "phantom"})
    b = write_ct_series(vol, tmp_path / "b")
    ds_a = pydicom.dcmread(a[0], stop_before_pixels=True)
    ds_b = pydicom.dcmread(b[0], stop_before_pixels=True)
    # Default UIDs are derived from the content: the same volume gets the same series UID.
    assert ds_a.SeriesInstanceUID == ds_b.SeriesInstanceUID
    assert ds_a.SeriesDescription == "phantom" and ds_a.ContrastBolusAgent == "IODINE"
    assert len({pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in a}) == 5
    assert read_series_folder(tmp_path / "a").meta["contrast"] is True
    assert read_series_folder(tmp_path / "b").meta["contrast"] is False

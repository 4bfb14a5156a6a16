"""DICOM series assembly (analysis.imaging.dicom): real files and every bad case of SPEC section 5."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from analysis.imaging.dicom import DicomSeriesError, assemble_series, read_series_folder
from analysis.imaging.dicom_writer import write_ct_series
from analysis.imaging.volume import Volume, load_nifti

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LIDC = DATA / "lidc-partial"
EXAMPLE_DICOM = DATA / "totalseg" / "example_ct_dicom"
SYNTAXES = DATA / "dicom-syntaxes"
EDGE = DATA / "dicom-edge"


def hu_of(path):
    """Independent reference: pydicom's pixels with the file's own rescale, no assembly code involved."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    # Some shared files carry invalid UIDs/VRs; pydicom warns, which is not what these tests are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# -- real series --------------------------------------------------------------------------------------
def test_lidc_slices_are_sorted_by_position_not_instance_number():
    files = sorted(LIDC.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    order = np.argsort(z)
    # Precondition: InstanceNumber runs opposite to z here, so sorting by it would flip the volume.
    instance = [int(h.InstanceNumber) for h in headers]
    assert list(np.argsort(instance)) == list(order[::-1])

    vol = read_series_folder(LIDC)
    assert vol.shape == (11, 512, 512)
    # README: 2.5 mm slice spacing; PixelSpacing 0.820312 in the headers.
    assert vol.spacing == pytest.approx((2.5, 0.820312, 0.820312))
    assert vol.meta["n_slices"] == 11
    # Slice k of the volume is the file with the k-th smallest z (axial, normal +z).
    for k, index in enumerate(order):
        np.testing.assert_array_equal(vol.array[k], hu_of(files[index]))
    np.testing.assert_allclose(vol.index_to_lps(np.array([[k, 0, 0] for k in range(11)]))[:, 2], np.sort(z))
    assert vol.series_uid == pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    assert vol.meta["replaced_empty_uids"] is False
    assert vol.meta["kvp"] == 120.0 and vol.meta["contrast"] is True  # ContrastBolusAgent is set
    # Same result from the files in reversed order and from in-memory datasets.
    again = assemble_series([pydicom.dcmread(f) for f in reversed(files)])
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_array_equal(again.affine, vol.affine)


def test_example_ct_dicom_empty_uids_get_deterministic_replacements():
    first = read_series_folder(EXAMPLE_DICOM)
    second = assemble_series(sorted(EXAMPLE_DICOM.iterdir(), reverse=True))
    assert first.meta["replaced_empty_uids"] is True and "replaced_empty_uids" in first.meta["flags"]
    assert first.series_uid.startswith("2.25.") and len(first.series_uid) <= 64
    assert first.series_uid == second.series_uid
    assert first.meta["study_uid"] == second.meta["study_uid"] != first.series_uid
    assert len(set(first.meta["sop_instance_uids"])) == 20
    assert first.meta["sop_instance_uids"] == second.meta["sop_instance_uids"]
    # README: JPEG 2000 lossless, Siemens, 120 kV, contrast.
    assert first.meta["transfer_syntaxes"] == [pydicom.uid.JPEG2000Lossless]
    assert first.meta["manufacturer"] == "SIEMENS" and first.meta["kvp"] == 120.0
    assert first.meta["contrast"] is True


def test_example_ct_dicom_geometry_matches_the_segmentation_grid():
    vol = read_series_folder(EXAMPLE_DICOM)
    seg = load_nifti(DATA / "totalseg" / "example_seg_dicom.nii.gz")
    assert vol.shape == seg.shape == (20, 512, 512)
    # README: 0.977 mm pixels, 2 mm spacing.
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    # The label file stores rows bottom-up (j flipped, as dcm2niix writes): same voxel centres once
    # j -> 511 - j, i.e. affine column 3 moves by 511 rows and the row step changes sign.
    flip_j = np.eye(4)
    flip_j[1, 1], flip_j[1, 3] = -1, 511
    np.testing.assert_allclose(vol.affine, seg.affine @ flip_j, atol=1e-4)
    # With that correspondence the vertebra labels (32 T12, 33 T11) sit on bone, not on soft tissue.
    labels = seg.array[:, ::-1, :]
    for level in (32, 33):
        assert vol.array[labels == level].mean() > 200  # cancellous + cortical bone, HU


@pytest.mark.parametrize("name", ["CT1_J2KR", "CT1_JLSL", "CT1_JPLL", "CT1_RLE"])
def test_lossless_syntaxes_decode_to_the_uncompressed_pixels(name):
    reference = assemble_series([SYNTAXES / "CT1_UNC"])
    vol = assemble_series([SYNTAXES / name])
    np.testing.assert_array_equal(vol.array, reference.array)
    np.testing.assert_array_equal(vol.affine, reference.affine)
    assert vol.array.dtype == np.int16


def test_lossy_syntaxes_decode_nearly_to_the_uncompressed_pixels():
    reference = assemble_series([SYNTAXES / "CT1_UNC"]).array.astype(float)
    near = assemble_series([SYNTAXES / "CT1_JLSN"]).array.astype(float)
    # JPEG-LS near-lossless guarantees |error| <= NEAR; the codestream's SOS segment says NEAR = 4.
    assert np.abs(near - reference).max() <= 4
    lossy = assemble_series([SYNTAXES / "CT1_J2KI"]).array.astype(float)
    # Lossy JPEG 2000: no bound, but the image must be the same one (PSNR well above 30 dB).
    rmse = np.sqrt(np.mean((lossy - reference) ** 2))
    psnr = 20 * np.log10(np.ptp(reference) / rmse)
    assert psnr > 35
    assert np.abs(lossy - reference).max() > 0  # really lossy, so the test above is not vacuous


def test_enhanced_multiframe_ct_assembles_from_functional_groups():
    path = EDGE / "eCT_Supplemental.dcm"
    vol = assemble_series([path])
    ds = pydicom.dcmread(path)
    # Per-frame PlanePositionSequence: frame 1 at z = -159, frame 2 at z = -149; PlaneOrientation
    # (-1, 0, 0, 0, 1, 0) makes the normal (0, 0, -1), so ascending along the normal puts frame 2 first.
    assert vol.shape == (2, 512, 512)
    pixels = ds.pixel_array.astype(float) * 1.0 - 1024.0  # shared PixelValueTransformation: 1, -1024
    np.testing.assert_array_equal(vol.array[0], pixels[1])
    np.testing.assert_array_equal(vol.array[1], pixels[0])
    expected = np.array([[-0.388672, 0, 0, 99.5],
                         [0, 0.388672, 0, -301.5],
                         [0, 0, -10.0, -149.0],
                         [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)
    assert vol.meta["contrast"] is True  # ContrastBolusAgentSequence (Iohexol)


def test_truncated_mr_file_is_rejected_as_not_ct():
    with pytest.raises(DicomSeriesError, match=r"Modality \(0008,0060\) is MR") as err:
        assemble_series([EDGE / "emri_small_jpeg_2k_lossless_too_short.dcm"])
    assert err.value.code == "not_ct"
    assert "1.2.826.0.1.3680043.2.1143.3712364435022872412969836992152438492" in str(err.value)


def test_bad_sequence_file_reads_with_its_declared_pixel_range():
    # pydicom 3 parses the UN-encoded (0018,9346) sequence of this file; the slice itself is intact, so it
    # must assemble (a single slice of 1 mm) rather than fail.
    vol = assemble_series([EDGE / "bad_sequence.dcm"])
    assert vol.shape == (1, 512, 512) and "single_slice" in vol.meta["flags"]
    # Smallest/Largest Image Pixel Value (0028,0106/0107) are 13 and 2267; intercept -1024.
    assert (vol.array.min(), vol.array.max()) == (13 - 1024, 2267 - 1024)


def test_693_j2kr_decodes_to_gdcm_values_and_unci_is_a_lossy_derivative():
    j2kr = assemble_series([EDGE / "693_J2KR.dcm"])
    unci = assemble_series([EDGE / "693_UNCI.dcm"])
    # pylibjpeg-openjpeg's test suite checks these stored values against GDCM; HU = stored - 1024.
    gdcm = np.array([1022, 1051, 1165, 1442, 1835, 2096, 2074, 1868, 1685, 1603]) - 1024
    np.testing.assert_array_equal(j2kr.array[0, 290, 135:145], gdcm)
    assert j2kr.array[0, 0, 0] == -2000 - 1024
    np.testing.assert_array_equal(j2kr.affine, unci.affine)
    # 693_UNCI says ImageType DERIVED and DerivationDescription "lossy conversion": same image, other pixels.
    assert pydicom.dcmread(EDGE / "693_UNCI.dcm").DerivationDescription == "lossy conversion"
    a, b = j2kr.array.astype(float).ravel(), unci.array.astype(float).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.99 and not np.array_equal(a, b)


# -- bad series produced with the writer --------------------------------------------------------------
def phantom(n=8, seed=0):
    """Random integer HU in [-1024, 2000), 24 x 20 pixels of 0.7 x 0.8 mm, 2.5 mm slices."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 2000, size=(n, 20, 24)).astype(np.int16)
    affine = np.array([[0.7, 0, 0, -100.0], [0, 0.8, 0, -50.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    return Volume(array, affine)


SERIES = "1.2.826.0.1.3680043.8.498.4242"


def assemble_bad(tmp_path, **fault):
    write_ct_series(phantom(), tmp_path, series_uid=SERIES, **fault)
    with pytest.raises(DicomSeriesError) as err:
        read_series_folder(tmp_path)
    return err.value


def test_missing_slice_is_reported_with_the_gap_positions(tmp_path):
    err = assemble_bad(tmp_path, drop_slices=[3])
    assert err.code == "missing_slices" and SERIES in str(err)
    # Slices 2 and 4 sit at z = 30 + 2.5 * k = 35.0 and 40.0 mm.
    assert "1 missing slice(s) at nominal step 2.500 mm" in str(err)
    assert "35.00 mm (slice_0002.dcm) and 40.00 mm (slice_0004.dcm)" in str(err)


def test_irregular_spacing_is_reported(tmp_path):
    err = assemble_bad(tmp_path, shift_slice=(4, 0.7))
    assert err.code == "irregular_spacing" and SERIES in str(err)
    # Slice 4 moved from 40.0 to 40.7 mm: steps 3.2 and 1.8 mm instead of 2.5.
    assert "3.200 mm between 37.50 mm" in str(err) and "1.800 mm between 40.70 mm" in str(err)


def test_gantry_tilt_is_detected_with_its_angle(tmp_path):
    err = assemble_bad(tmp_path, tilt_degrees=15.0)
    assert err.code == "gantry_tilt" and SERIES in str(err)
    assert "gantry tilt of 15.00 degrees" in str(err)


def test_localizer_mixed_in_is_rejected_or_excluded_on_request(tmp_path):
    err = assemble_bad(tmp_path, add_localizer=True)
    assert err.code == "localizer_mixed_in" and SERIES in str(err) and "slice_localizer.dcm" in str(err)
    vol = read_series_folder(tmp_path, exclude_localizers=True)
    np.testing.assert_array_equal(vol.array, phantom().array)
    assert vol.meta["excluded"] == ["excluded 1 localizer image(s): slice_localizer.dcm"]


def test_two_series_are_listed(tmp_path):
    paths = write_ct_series(phantom(), tmp_path, series_uid=SERIES, second_series=True)
    second = pydicom.dcmread(paths[-1], stop_before_pixels=True).SeriesInstanceUID
    with pytest.raises(DicomSeriesError) as err:
        read_series_folder(tmp_path)
    assert err.value.code == "several_series"
    assert f"{SERIES} (8 images)" in str(err.value) and f"{second} (8 images)" in str(err.value)
    assert str(tmp_path) in str(err.value)  # the folder names the mix
    # Picking one of them works.
    np.testing.assert_array_equal(read_series_folder(tmp_path, series_uid=second).array, phantom().array)


def test_missing_rescale_names_the_tags(tmp_path):
    err = assemble_bad(tmp_path, remove_rescale=True)
    assert err.code == "missing_rescale" and SERIES in str(err)
    assert "RescaleSlope (0028,1053) missing in 8 of 8 images" in str(err)


def test_missing_rescale_intercept_alone_names_its_tag(tmp_path):
    paths = write_ct_series(phantom(), tmp_path, series_uid=SERIES)
    ds = pydicom.dcmread(paths[5])
    del ds.RescaleIntercept
    ds.save_as(paths[5])
    with pytest.raises(DicomSeriesError, match=r"RescaleIntercept \(0028,1052\) missing in 1 of 8 images "
                                               r"\(slice_0005.dcm\)"):
        read_series_folder(tmp_path)


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.RLELossless])
def test_truncated_pixel_data_names_the_file(tmp_path, syntax):
    err = assemble_bad(tmp_path, truncate_slices=[6], transfer_syntax=syntax)
    assert err.code == "truncated_pixel_data" and SERIES in str(err)
    assert "file slice_0006.dcm" in str(err) and "truncated" in str(err)


def test_mr_instead_of_ct_is_rejected(tmp_path):
    err = assemble_bad(tmp_path, modality="MR")
    assert err.code == "not_ct" and SERIES in str(err)
    assert "Modality (0008,0060) is MR (8 images), not CT" in str(err)


def test_duplicated_slice_position_is_rejected(tmp_path):
    err = assemble_bad(tmp_path, shift_slice=(5, -2.5))  # slice 5 lands on slice 4 (z = 40.0 mm)
    assert err.code == "duplicate_position" and SERIES in str(err)
    assert "both at 40.000 mm" in str(err)


def test_orientation_mismatch_is_rejected(tmp_path):
    paths = write_ct_series(phantom(), tmp_path, series_uid=SERIES)
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9848, -0.1736]  # 10 degrees about x
    ds.save_as(paths[2])
    with pytest.raises(DicomSeriesError, match="ImageOrientationPatient \\(0020,0037\\) differs") as err:
        read_series_folder(tmp_path)
    assert "slice_0002.dcm" in str(err.value) and SERIES in str(err.value)


def test_missing_codec_is_named(tmp_path):
    paths = write_ct_series(phantom(n=2), tmp_path, series_uid=SERIES)
    datasets = [pydicom.dcmread(p) for p in paths]
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # pydicom has no decoder for video
    with pytest.raises(DicomSeriesError, match="codec missing for transfer syntax MPEG2 Main Profile") as err:
        assemble_series(datasets)
    assert err.value.code == "codec_missing"


def test_empty_uids_from_the_writer_are_replaced_deterministically(tmp_path):
    empty = {"SeriesInstanceUID": "", "StudyInstanceUID": "", "SOPInstanceUID": ""}
    write_ct_series(phantom(), tmp_path / "a", extra_tags=empty)
    write_ct_series(phantom(), tmp_path / "b", extra_tags=empty, transfer_syntax=pydicom.uid.RLELossless)
    a, b = read_series_folder(tmp_path / "a"), read_series_folder(tmp_path / "b")
    # Same pixels and geometry -> same UIDs, whatever the transfer syntax.
    assert a.series_uid == b.series_uid and a.meta["replaced_empty_uids"]
    other = phantom(seed=1)
    write_ct_series(other, tmp_path / "c", extra_tags=empty)
    assert read_series_folder(tmp_path / "c").series_uid != a.series_uid


def test_non_dicom_files_are_skipped_with_a_note(tmp_path):
    write_ct_series(phantom(), tmp_path, series_uid=SERIES)
    (tmp_path / "README.txt").write_text("not an image")
    vol = read_series_folder(tmp_path)
    np.testing.assert_array_equal(vol.array, phantom().array)
    assert vol.meta["notes"] == ["README.txt: not DICOM, skipped"]


def test_empty_or_imageless_folder_is_an_error(tmp_path):
    with pytest.raises(DicomSeriesError, match="holds no files"):
        read_series_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DicomSeriesError, match="no CT images"):
        read_series_folder(tmp_path)


def test_shuffled_copies_of_lidc_assemble_identically(tmp_path):
    # File names chosen to sort in the reverse of the slice order: only positions may decide.
    files = sorted(LIDC.glob("*.dcm"), key=lambda f: float(
        pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    for rank, f in enumerate(files):
        shutil.copy(f, tmp_path / f"{len(files) - rank:02d}.dcm")
    np.testing.assert_array_equal(read_series_folder(tmp_path).array, read_series_folder(LIDC).array)

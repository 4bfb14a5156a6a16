"""Every bad series the PACS can hand us (written by the project's own writer, loaded into Orthanc through
STOW-RS): a clear message naming the series and the problem, no StoredSeries row, no file."""

import numpy as np
import pydicom
import pytest

from analysis.imaging.dicom_writer import write_ct_series
from analysis.imaging.volume import Volume
from studies.pacs.client import Endpoint, PacsClient
from studies.pacs.ingest import IngestError, import_local, pull_series, pull_study
from studies.pacs.models import PseudonymMap, StoredSeries
from tests.studies.pacs.conftest import stored_files


def phantom(seed=0, shape=(10, 40, 48)):
    """Integer HU in [-1000, 1500] with an LPS affine: 0.7 mm pixels, 2 mm slices, origin off zero."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=shape, dtype=np.int16)
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    affine[:3, 3] = [-16.5, -20.0, 100.0]
    return Volume(array=array, affine=affine)


CASES = {
    # name: (writer options, expected code, words the message must contain)
    "missing_slice": (dict(drop_slices=(4,)), "missing_slices", "1 missing slice"),
    "irregular_spacing": (dict(shift_slice=(5, 0.6)), "irregular_spacing", "irregular slice spacing"),
    "tilt": (dict(tilt_degrees=15.0), "gantry_tilt", "gantry tilt of 15.00 degrees"),
    "localizer": (dict(add_localizer=True), "localizer_mixed_in", "localizer/scout image"),
    "missing_rescale": (dict(remove_rescale=True), "missing_rescale", "RescaleSlope (0028,1053) missing"),
    "mr": (dict(modality="MR"), "not_ct", "Modality (0008,0060) is MR"),
}


def write_case(tmp_path, name, **options):
    folder = tmp_path / name
    files = write_ct_series(phantom(), folder, patient_id=f"BAD-{name}", **options)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return files, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_series_from_the_pacs_is_refused_with_its_reason(case, orthanc, project, pacs_storage, tmp_path):
    options, code, words = CASES[case]
    files, study, series = write_case(tmp_path, case, **options)
    stored, failed = orthanc.stow(files)
    assert len(stored) == len(files) and not failed
    client = PacsClient(Endpoint(orthanc.url))
    with pytest.raises(IngestError) as info:
        pull_series(project, client, study, series)
    message = str(info.value)
    assert info.value.code == code, message
    assert message.startswith(f"series {series}: ") and words in message
    assert not StoredSeries.objects.exists() and not PseudonymMap.objects.exists()
    assert stored_files(pacs_storage) == []  # no volume, no leftover instance files


def test_study_without_an_eligible_series_says_why(orthanc, project, pacs_storage, tmp_path):
    files, study, series = write_case(tmp_path, "mr-only", modality="MR")
    orthanc.stow(files)
    with pytest.raises(IngestError) as info:
        pull_study(project, PacsClient(Endpoint(orthanc.url)), study)
    assert info.value.code == "no_eligible_series"
    assert series in str(info.value) and "Modality is MR, not CT" in str(info.value)
    assert stored_files(pacs_storage) == []


def test_truncated_pixel_data(orthanc, project, pacs_storage, tmp_path):
    """Orthanc refuses truncated instances at STOW-RS (it parses every file), so a PACS cannot hand them
    out; the same files through the local import get the assembler's clear message and store nothing."""
    files, study, series = write_case(tmp_path, "truncated", truncate_slices=(3,))
    stored, failed = orthanc.stow(files)
    truncated_sop = str(pydicom.dcmread(files[3], stop_before_pixels=True).SOPInstanceUID)
    # Orthanc answers 400 and keeps the other 9; it cannot even name the refused instance.
    assert len(stored) == len(files) - 1 and truncated_sop not in stored
    with pytest.raises(IngestError) as info:
        import_local(project, tmp_path / "truncated")
    assert info.value.code == "truncated_pixel_data"
    assert str(info.value).startswith(f"series {series}: ") and "slice_0003.dcm" in str(info.value)
    assert not StoredSeries.objects.exists() and stored_files(pacs_storage) == []
    # What Orthanc kept is a series with a missing slice: refused as such.
    with pytest.raises(IngestError) as info:
        pull_series(project, PacsClient(Endpoint(orthanc.url)), study, series)
    assert info.value.code == "missing_slices"


def test_two_series_in_one_study_the_thinner_plain_one_is_chosen(orthanc, project, pacs_storage, tmp_path):
    base = phantom(seed=3)
    volume = Volume(array=base.array, affine=base.affine @ np.diag([1, 1, 0.5, 1]))  # 1 mm slices
    thick = Volume(array=volume.array[::2], affine=base.affine)  # every other slice: 2 mm
    study_uid = "2.25.111222333444555666777888999"
    files_thin = write_ct_series(volume, tmp_path / "thin", study_uid=study_uid, series_uid="2.25.1001",
                                 extra_tags={"SeriesNumber": 3, "SeriesDescription": "thin"})
    files_contrast = write_ct_series(volume, tmp_path / "contrast", study_uid=study_uid, series_uid="2.25.1002",
                                     contrast=True, extra_tags={"SeriesNumber": 4})
    files_thick = write_ct_series(thick, tmp_path / "thick", study_uid=study_uid, series_uid="2.25.1003",
                                  extra_tags={"SeriesNumber": 2})
    orthanc.stow(files_thin + files_contrast + files_thick)
    result = pull_study(project, PacsClient(Endpoint(orthanc.url)), study_uid)
    assert result.stored.series_uid == "2.25.1001"
    reasons = result.selection.reasons
    assert reasons["2.25.1001"].startswith("chosen: CT ORIGINAL/PRIMARY/AXIAL, 1 mm, 10 images, plain")
    assert "contrast-enhanced; a plain series is preferred" in reasons["2.25.1002"]
    assert "thicker slices than 1 mm" in reasons["2.25.1003"]
    assert result.stored.selection_reason == reasons["2.25.1001"]
    assert StoredSeries.objects.count() == 1
    np.testing.assert_array_equal(result.stored.load_volume().array, volume.array)

    # A coordinator's override takes the contrast series and says so.
    override = pull_study(project, PacsClient(Endpoint(orthanc.url)), study_uid, series_uid="2.25.1002",
                          override_by="coordinator1")
    assert override.stored.series_uid == "2.25.1002"
    assert override.stored.selection_reason.startswith("chosen by override (automatic choice: 2.25.1001)")
    assert override.stored.selection_reason.endswith("(override by coordinator1)")
    assert "contrast" in override.stored.flags

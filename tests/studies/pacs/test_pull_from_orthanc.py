"""Pulling real series from a real Orthanc (DICOMweb plugin) loaded through STOW-RS: exact HU, geometry,
transfer syntaxes decoded exactly, idempotent re-runs."""

import random
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from analysis.imaging.dicom import assemble_series, read_series_folder
from studies.pacs.client import Endpoint, PacsClient
from studies.pacs.ingest import IngestError, pull_series, pull_study
from studies.pacs.models import PseudonymMap, StoredSeries
from tests.conftest import missing_service
from tests.studies.pacs.conftest import stored_files

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
LIDC = DATA / "lidc-partial"
SYNTAXES = DATA / "dicom-syntaxes"
LOSSLESS = ("CT1_J2KR", "CT1_JLSL", "CT1_JPLL", "CT1_RLE")


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def loaded(orthanc):
    """LIDC (STOW-RS in shuffled order) and the 7 transfer syntaxes, loaded once."""
    if not LIDC.is_dir():
        missing_service(f"shared test data {LIDC} missing")  # a failure with CI=true, as every service
    lidc = sorted(LIDC.glob("*.dcm"))
    random.Random(7).shuffle(lidc)  # explicit seed: any order must give the same volume
    stored, failed = orthanc.stow(lidc)
    assert len(stored) == 11 and not failed
    stored, failed = orthanc.stow(sorted(SYNTAXES.iterdir()))
    assert len(stored) == 7 and not failed
    return orthanc


def uids(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def test_lidc_pull_gives_the_same_volume_as_the_source_files(loaded, project, pacs_storage):
    study, series = uids(next(LIDC.glob("*.dcm")))
    client = PacsClient(Endpoint(loaded.url))
    result = pull_series(project, client, study, series)
    assert result.created
    stored = result.stored
    # Reference: the one assembler on the original files, read straight from disk (no PACS involved).
    reference = read_series_folder(LIDC)
    volume = stored.load_volume()
    assert volume.array.dtype == reference.array.dtype
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-6)
    assert stored.n_slices == 11 and stored.shape == [11, 512, 512]
    # README: 2.5 mm spacing; PixelSpacing 0.820312 mm in the headers.
    assert stored.spacing == pytest.approx([2.5, 0.820312, 0.820312])
    assert stored.study_uid == study and stored.series_uid == series
    assert "contrast" in stored.flags  # ContrastBolusAgent is set in these files
    # The temporary instance folder is gone; the only file is the volume.
    assert stored_files(pacs_storage) == [f"volumes/p{project.pk}/{series}.npz"]


def test_re_pull_is_idempotent(loaded, project, pacs_storage):
    study, series = uids(next(LIDC.glob("*.dcm")))
    client = PacsClient(Endpoint(loaded.url))
    first = pull_series(project, client, study, series).stored
    mtime = (pacs_storage / first.volume.name).stat().st_mtime_ns
    second = pull_study(project, client, study, series_uid=series)
    third = pull_study(project, client, study)  # selection picks the same series
    assert not second.created and not third.created
    assert second.stored.pk == first.pk == third.stored.pk
    assert StoredSeries.objects.count() == 1 and PseudonymMap.objects.count() == 1
    assert (pacs_storage / first.volume.name).stat().st_mtime_ns == mtime  # not rewritten
    assert len(stored_files(pacs_storage)) == 1


def test_patient_id_is_replaced_by_the_pseudonym(loaded, project, pacs_storage):
    study, series = uids(next(LIDC.glob("*.dcm")))
    stored = pull_series(project, PacsClient(Endpoint(loaded.url)), study, series).stored
    real = str(pydicom.dcmread(next(LIDC.glob("*.dcm")), stop_before_pixels=True).PatientID)
    mapping = PseudonymMap.objects.get(project=project)
    assert mapping.real_patient_id == real and mapping.pseudonym != real
    assert stored.meta["patient_pseudonym"] == mapping.pseudonym
    # The real id is nowhere in what was stored about the series.
    row = StoredSeries.objects.filter(pk=stored.pk).values().get()
    assert real not in repr(row)


def test_transfer_syntaxes_through_the_pacs_decode_exactly(loaded, tmp_path):
    """WADO-RS with transfer-syntax=*: the PACS sends what it stores; lossless ones equal CT1_UNC exactly."""
    client = PacsClient(Endpoint(loaded.url))
    decoded = {}
    for name in ("CT1_UNC",) + LOSSLESS + ("CT1_J2KI", "CT1_JLSN"):
        study, series = uids(SYNTAXES / name)
        sop = str(pydicom.dcmread(SYNTAXES / name, stop_before_pixels=True).SOPInstanceUID)
        folder = tmp_path / name
        files = client.retrieve_series(study, series, folder)
        match = [f for f in files if str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) == sop]
        assert len(match) == 1
        # No transcoding on the way: same transfer syntax, same encoded pixel bytes as the file sent.
        sent, received = pydicom.dcmread(SYNTAXES / name), pydicom.dcmread(match[0])
        assert received.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert received.PixelData == sent.PixelData
        decoded[name] = assemble_series(match).array
    reference = decoded["CT1_UNC"]
    for name in LOSSLESS:
        np.testing.assert_array_equal(decoded[name], reference, err_msg=name)
    # Lossy ones arrive unchanged, so they decode exactly as the file sent; JPEG-LS near-lossless keeps
    # |error| <= NEAR = 4 (its SOS segment), lossy JPEG 2000 has no bound but differs.
    for name in ("CT1_J2KI", "CT1_JLSN"):
        np.testing.assert_array_equal(decoded[name], assemble_series([SYNTAXES / name]).array, err_msg=name)
    assert np.abs(decoded["CT1_JLSN"].astype(np.int32) - reference).max() <= 4
    assert np.abs(decoded["CT1_J2KI"].astype(np.int32) - reference).max() > 0


def test_six_syntaxes_of_one_slice_are_not_a_series(loaded, project, pacs_storage):
    """The WG04 files share one SeriesInstanceUID and one position: a clear error, nothing stored."""
    study, series = uids(SYNTAXES / "CT1_UNC")
    with pytest.raises(IngestError) as info:
        pull_series(project, PacsClient(Endpoint(loaded.url)), study, series)
    assert info.value.code == "duplicate_position"
    assert series in str(info.value) and "duplicated slice position" in str(info.value)
    assert not StoredSeries.objects.exists() and stored_files(pacs_storage) == []


def test_progress_is_reported_per_instance(loaded, project, pacs_storage):
    study, series = uids(next(LIDC.glob("*.dcm")))
    seen = []
    pull_series(project, PacsClient(Endpoint(loaded.url)), study, series,
                progress=lambda fraction, message: seen.append((fraction, message)))
    received = [m for _, m in seen if m.startswith("received")]
    assert len(received) == 11 and received[-1].startswith("received 11 of 11 instances")
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.9)


def test_unknown_series_is_a_clear_error(loaded, project, pacs_storage):
    study, _ = uids(next(LIDC.glob("*.dcm")))
    with pytest.raises(Exception) as info:
        pull_series(project, PacsClient(Endpoint(loaded.url, max_retries=0)), study, "1.2.3.4.5")
    assert "1.2.3.4.5" in str(info.value)
    assert not StoredSeries.objects.exists()
    assert stored_files(pacs_storage) == []

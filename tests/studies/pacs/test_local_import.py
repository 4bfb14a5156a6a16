"""Local import of a folder or a zip: the anonymised JPEG 2000 series with empty UIDs (which a PACS refuses),
deterministic replacement UIDs, idempotence, selection among several series, unsafe zips."""

import hashlib
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from analysis.imaging.dicom import read_series_folder
from analysis.imaging.dicom_writer import write_ct_series
from studies.pacs.ingest import IngestError, import_local
from studies.pacs.models import PseudonymMap, StoredSeries
from tests.studies.pacs.conftest import stored_files
from tests.studies.pacs.test_bad_series import phantom

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
EXAMPLE = DATA / "totalseg" / "example_ct_dicom"


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_orthanc_refuses_instances_without_uids(orthanc):
    """Why the empty-UID series goes through the local import: a PACS cannot store it (no SOPInstanceUID)."""
    stored, _ = orthanc.stow(sorted(EXAMPLE.iterdir())[:2])
    assert stored == [] and orthanc.count_instances() == 0


def test_empty_uid_series_from_a_folder_gets_deterministic_uids(project, pacs_storage):
    before = digest(EXAMPLE)
    result = import_local(project, EXAMPLE)
    assert digest(EXAMPLE) == before  # the source folder is never modified (de-identification works on copies)
    stored = result.stored
    # Reference: the one assembler on the original files. README: 20 slices 512x512, 0.977 mm, 2 mm.
    reference = read_series_folder(EXAMPLE)
    volume = stored.load_volume()
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-6)
    assert stored.shape == [20, 512, 512] and stored.spacing[0] == pytest.approx(2.0)
    assert "replaced_empty_uids" in stored.flags and "contrast" in stored.flags
    assert stored.series_uid == reference.series_uid and stored.series_uid.startswith("2.25.")
    assert stored.meta["deidentification"]["replaced_empty_uids"] is True
    assert not PseudonymMap.objects.exists()  # no PatientID in the source: nothing to map
    assert "chosen:" in stored.selection_reason


def test_zip_of_the_same_series_is_the_same_series(project, pacs_storage, tmp_path):
    first = import_local(project, EXAMPLE).stored
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for k, path in enumerate(sorted(EXAMPLE.iterdir(), reverse=True)):
            zf.write(path, f"dir{k % 3}/{path.name}")  # other order, nested folders
    again = import_local(project, archive)
    assert not again.created and again.stored.pk == first.pk
    assert StoredSeries.objects.count() == 1
    assert stored_files(pacs_storage) == [first.volume.name]


def test_folder_with_two_series_imports_the_chosen_one(project, pacs_storage, tmp_path):
    folder = tmp_path / "mixed"
    write_ct_series(phantom(seed=1), folder, series_uid="2.25.51", file_prefix="a",
                    extra_tags={"SeriesNumber": 5})
    write_ct_series(phantom(seed=2), folder, series_uid="2.25.52", file_prefix="b", modality="MR",
                    extra_tags={"SeriesNumber": 1})
    result = import_local(project, folder)
    assert result.stored.series_uid == "2.25.51"
    assert result.selection.reasons["2.25.52"] == "not eligible: Modality is MR, not CT"
    np.testing.assert_array_equal(result.stored.load_volume().array, phantom(seed=1).array)
    with pytest.raises(IngestError) as info:
        import_local(project, folder, series_uid="2.25.52")  # an override cannot make MR into CT
    assert info.value.code == "not_ct" and str(info.value).startswith("series 2.25.52: ")
    assert StoredSeries.objects.count() == 1


def test_unsafe_zip_is_refused(project, pacs_storage, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../etc/evil.dcm", b"x")
    with pytest.raises(IngestError, match="unsafe member name"):
        import_local(project, archive)
    assert stored_files(pacs_storage) == []


def test_not_dicom_at_all(project, pacs_storage, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(IngestError) as info:
        import_local(project, tmp_path / "notes")
    assert info.value.code == "no_images" and "no DICOM images in notes" in str(info.value)
    with pytest.raises(IngestError, match="neither a folder nor a zip"):
        import_local(project, tmp_path / "notes" / "readme.txt")
    assert stored_files(pacs_storage) == []


def test_replacement_uids_do_not_depend_on_file_names(project, pacs_storage, tmp_path):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for k, path in enumerate(sorted(EXAMPLE.iterdir())):
        (renamed / f"img{(k * 7) % 20:02d}").write_bytes(path.read_bytes())
    a = import_local(project, renamed).stored
    b = import_local(project, EXAMPLE)
    assert b.stored.pk == a.pk and not b.created
    assert pydicom.dcmread(next(EXAMPLE.iterdir()), stop_before_pixels=True).SeriesInstanceUID == ""

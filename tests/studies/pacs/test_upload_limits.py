"""Limits on what comes in: zip imports are checked for their compression ratio and total size before
(and while) extracting, with the member named; request bodies over the upload limit are answered 413 with
a page that says the limit, before anything is read or stored."""

import time
import zipfile
from pathlib import Path

import pytest
from django.urls import reverse

from studies.models import Job
from studies.pacs.ingest import IngestError, import_local
from studies.pacs.models import StoredSeries
from tests.studies.pacs.conftest import stored_files

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
LIDC = DATA / "lidc-partial"
MiB = 1024 ** 2


def zip_of_zeros(path: Path, sizes: dict) -> Path:
    """A deflated zip whose members are runs of zero bytes (deflate shrinks them about 1000 times)."""
    block = bytes(MiB)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, size in sizes.items():
            with zf.open(name, "w", force_zip64=True) as fh:
                for start in range(0, size, MiB):
                    fh.write(block[:min(MiB, size - start)])
    return path


def test_a_zip_bomb_is_refused_before_extracting(project, pacs_storage, tmp_path):
    """The issue's case: a 1 MB zip holding 1 GiB. Refused from the zip's directory, naming the member,
    with nothing written (extracting 1 GiB would take seconds and leave files behind)."""
    bomb = zip_of_zeros(tmp_path / "scan.zip", {"case/IM0001.dcm": 1024 * MiB})
    assert bomb.stat().st_size < 1.1 * MiB
    started = time.perf_counter()
    with pytest.raises(IngestError) as caught:
        import_local(project, bomb)
    assert time.perf_counter() - started < 1.0
    assert caught.value.code == "zip_bomb"
    # 1024 MiB from 1.0 MiB: deflate stores a run of zeros at about 1/1030 of its size.
    assert str(caught.value).startswith("series <scan.zip>: member case/IM0001.dcm of scan.zip expands 1,0")
    assert "(1.0 MiB to 1.0 GiB); at most 100 times is accepted (IMPORT_ZIP_MAX_RATIO)" in str(caught.value)
    assert stored_files(pacs_storage) == [] and not StoredSeries.objects.exists()


def test_the_total_size_is_limited(project, pacs_storage, tmp_path, settings):
    settings.IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES = 5 * MiB
    settings.IMPORT_ZIP_MAX_RATIO = 10_000  # this test is about the total only
    many = zip_of_zeros(tmp_path / "many.zip", {f"IM{k:04d}.dcm": 2 * MiB for k in range(3)})
    with pytest.raises(IngestError) as caught:
        import_local(project, many)
    assert caught.value.code == "zip_too_large"
    assert str(caught.value) == ("series <many.zip>: many.zip expands to more than 5.0 MiB "
                                 "(IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES): 6.0 MiB declared")
    assert stored_files(pacs_storage) == []


def test_a_zip_that_understates_its_members_is_stopped_while_extracting(project, pacs_storage, tmp_path):
    """The zip's directory says 1 MiB, the member inflates to 3 MiB: extraction stops at the declared size
    and the member is named as damaged; nothing is left."""
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("IM0001.dcm", "w") as fh:
            fh.write(bytes(3 * MiB))
        zf.infolist()[0].file_size = MiB  # written into the central directory at close
    with pytest.raises(IngestError) as caught:
        import_local(project, path)
    assert caught.value.code == "bad_zip"
    assert str(caught.value).startswith("series <liar.zip>: member IM0001.dcm of liar.zip is damaged (Bad CRC-32")
    assert stored_files(pacs_storage) == []


def test_too_many_members(project, pacs_storage, tmp_path, settings):
    settings.IMPORT_ZIP_MAX_MEMBERS = 3
    path = zip_of_zeros(tmp_path / "files.zip", {f"IM{k}.dcm": 10 for k in range(4)})
    with pytest.raises(IngestError, match=r"files.zip holds 4 files, more than 3 \(IMPORT_ZIP_MAX_MEMBERS\)"):
        import_local(project, path)


def test_a_real_series_passes_the_limits(project, pacs_storage, tmp_path, shared_data):
    """The defaults let a real CT series through (LIDC: 11 slices, deflated about 2 times)."""
    path = tmp_path / "case.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for dcm in sorted(LIDC.glob("*.dcm")):
            zf.write(dcm, f"case/{dcm.name}")
    result = import_local(project, path)
    assert result.created and result.stored.n_slices == 11


# -- request size -------------------------------------------------------------------------------------------
def test_an_upload_over_the_limit_is_answered_413_and_nothing_is_stored(coordinator_client, project,
                                                                        pacs_storage, settings, tmp_path):
    settings.MAX_UPLOAD_BYTES = 64 * 1024
    upload = tmp_path / "big.zip"
    upload.write_bytes(b"PK" + bytes(100 * 1024))
    with open(upload, "rb") as fh:
        response = coordinator_client.post(reverse("studies:pacs_import", args=[project.pk]), {"file": fh})
    assert response.status_code == 413
    html = response.content.decode()
    # 100 KiB of file plus the multipart framing; the limit as set above.
    assert "This upload is 102," in html and "the site accepts at most 65,536 bytes in one request" in html
    assert "MAX_UPLOAD_BYTES" in html
    assert response["Connection"] == "close"
    assert not Job.objects.exists() and stored_files(pacs_storage) == []


def test_a_form_over_the_limit_is_answered_413(coordinator_client, project, settings):
    """A body without files is held in memory: DATA_UPLOAD_MAX_MEMORY_SIZE bounds it, with the same page."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    url = reverse("studies:pacs_search", args=[project.pk])
    response = coordinator_client.post(url, "patient_id=" + "x" * 20_000,
                                       content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert "This form is 20,011 bytes; the site accepts at most 10,000 bytes" in response.content.decode()
    # The same field in a multipart body (allowed up to MAX_UPLOAD_BYTES for its files) is refused by Django
    # when the field is read: a 400 with a page that says why, not a 500.
    response = coordinator_client.post(url, {"patient_id": "x" * 20_000})
    assert response.status_code == 400
    assert "a form field was larger than the site accepts" in response.content.decode()


def test_the_default_limits(settings):
    assert settings.MAX_UPLOAD_BYTES == 2 * 1024 ** 3
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 5 * MiB
    assert settings.IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES == 4 * 1024 ** 3 and settings.IMPORT_ZIP_MAX_RATIO == 100

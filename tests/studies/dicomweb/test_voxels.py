"""The viewer's /voxels extension of the DICOMweb endpoint: the stored int16 values of every slice, whole or
in byte ranges, equal to the stored volume (and to what WADO-RS serves frame by frame), permission-checked
like the rest of the endpoint."""

import numpy as np
import pytest

from analysis.imaging.volume import Volume
from studies.dicomweb.tokens import create_token
from studies.pacs.ingest import store_volume
from tests.factories import ExamFactory, MembershipFactory, UserFactory


@pytest.fixture
def stored(db, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    exam = ExamFactory()
    array = np.random.default_rng(4).integers(-1024, 3000, size=(5, 6, 7), dtype=np.int16)
    volume = Volume(array=array, affine=np.diag([0.7, 0.8, 2.5, 1.0]), series_uid="1.2.3.4.5.6",
                    meta={"study_uid": "1.2.3.4.5"})
    store_volume(exam.patient.project, volume, exam=exam, source="test")
    project = exam.patient.project
    return project, array, f"/p/{project.pk}/dicom-web/studies/1.2.3.4.5/series/1.2.3.4.5.6/voxels"


def test_whole_series_equals_the_stored_volume(client, stored):
    project, array, url = stored
    client.force_login(MembershipFactory(project=project, role="annotator").user)
    answer = client.get(url)
    assert answer.status_code == 200 and answer["X-Shape"] == "5,6,7" and answer["Accept-Ranges"] == "bytes"
    assert (answer["X-Rescale-Slope"], answer["X-Rescale-Intercept"]) == ("1.0", "0.0")
    assert np.array_equal(np.frombuffer(answer.content, dtype="<i2").reshape(5, 6, 7), array)


def test_byte_ranges_are_the_slices_they_name(client, stored):
    project, array, url = stored
    client.force_login(MembershipFactory(project=project, role="annotator").user)
    plane = 6 * 7 * 2
    answer = client.get(url, HTTP_RANGE=f"bytes={2 * plane}-{4 * plane - 1}")  # slices 2 and 3
    assert answer.status_code == 206 and answer["Content-Range"] == f"bytes {2 * plane}-{4 * plane - 1}/{5 * plane}"
    assert np.array_equal(np.frombuffer(answer.content, dtype="<i2").reshape(2, 6, 7), array[2:4])
    tail = client.get(url, HTTP_RANGE=f"bytes=-{plane}")  # the last slice
    assert np.array_equal(np.frombuffer(tail.content, dtype="<i2").reshape(6, 7), array[4])
    # A range past the end is cut at the end; one that starts past it, or is malformed, is 416.
    assert len(client.get(url, HTTP_RANGE=f"bytes={4 * plane}-{10 * plane}").content) == plane
    for bad in (f"bytes={5 * plane}-", "bytes=a-b", "bytes=-", "items=0-1"):
        answer = client.get(url, HTTP_RANGE=bad)
        assert answer.status_code == 416 and answer["Content-Range"] == f"bytes */{5 * plane}", bad


def test_tokens_and_membership_are_checked(client, stored):
    project, _, url = stored
    assert client.get(url).status_code == 401
    _, outsider = create_token(UserFactory(), "outside")
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {outsider}").status_code == 404
    _, member = create_token(MembershipFactory(project=project, role="annotator").user, "member")
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {member}").status_code == 200

"""The site's DICOMweb endpoint with the real dicomweb-client over a live server, authenticated with an API
token: QIDO-RS lists the project's series, WADO-RS returns instances whose decoded pixels are the stored
volume exactly; no token 401, a user outside the project 404."""

import numpy as np
import pytest
import requests

from analysis.imaging.volume import Volume
from studies.dicomweb.instances import sop_uid_of
from studies.dicomweb.tokens import create_token
from studies.pacs.ingest import store_volume
from tests.factories import ExamFactory, MembershipFactory, UserFactory


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}


def _oblique_volume(series_uid, seed):
    rng = np.random.default_rng(seed)
    # HU from -1024 to 3000 with a non-axis-aligned, anisotropic affine: pixels and geometry must both survive.
    array = rng.integers(-1024, 3000, size=(6, 40, 32), dtype=np.int16)
    angle = np.radians(10)
    affine = np.array([[0.7 * np.cos(angle), -0.8 * np.sin(angle), 0, -120.5],
                       [0.7 * np.sin(angle), 0.8 * np.cos(angle), 0, 30.25],
                       [0, 0, 2.5, -400.0],
                       [0, 0, 0, 1]])
    return Volume(array=array, affine=affine, series_uid=series_uid, meta={"study_uid": "1.2.3.4." + str(seed)})


@pytest.fixture
def two_series(transactional_db, storage):
    exam = ExamFactory()
    project = exam.patient.project
    volumes = [_oblique_volume("1.2.826.0.1.3680043.8.498.11", 1), _oblique_volume("1.2.826.0.1.3680043.8.498.12", 2)]
    for volume in volumes:
        store_volume(project, volume, exam=exam, source="test")
    # A series of another project, which must never be listed.
    other = ExamFactory()
    store_volume(other.patient.project, _oblique_volume("1.2.826.0.1.3680043.8.498.99", 3), exam=other)
    return project, volumes


def _client(live_server, project, token):
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(f"{live_server.url}/p/{project.pk}/dicom-web",
                          headers={"Authorization": f"Bearer {token}"})


def test_dicomweb_client_searches_and_retrieves_exact_pixels(live_server, two_series):
    project, volumes = two_series
    user = MembershipFactory(project=project, role="annotator").user
    _, token = create_token(user, "test script")
    client = _client(live_server, project, token)

    found = client.search_for_series()
    assert sorted(s["0020000E"]["Value"][0] for s in found) == sorted(v.series_uid for v in volumes)
    studies = client.search_for_studies()
    assert sorted(s["0020000D"]["Value"][0] for s in studies) == ["1.2.3.4.1", "1.2.3.4.2"]

    volume = volumes[0]
    instances = client.retrieve_series("1.2.3.4.1", volume.series_uid)
    assert len(instances) == volume.shape[0]
    instances.sort(key=lambda ds: int(ds.InstanceNumber))
    for k, ds in enumerate(instances):
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(hu, volume.array[k])  # exact, voxel for voxel
        position = volume.affine @ np.array([0, 0, k, 1])
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], position[:3], atol=1e-5)
    assert [float(v) for v in instances[0].PixelSpacing] == pytest.approx([0.8, 0.7])

    # Stable UIDs: a second retrieval gives the same instances.
    listed = client.search_for_instances("1.2.3.4.1", volume.series_uid)
    assert [i["00080018"]["Value"][0] for i in listed] == [ds.SOPInstanceUID for ds in instances]
    frame = client.retrieve_instance_frames("1.2.3.4.1", volume.series_uid, instances[3].SOPInstanceUID, [1])
    assert np.array_equal(np.frombuffer(frame[0], dtype="<i2").reshape(40, 32), volume.array[3])
    metadata = client.retrieve_series_metadata("1.2.3.4.1", volume.series_uid)
    assert len(metadata) == 6 and "7FE00010" in metadata[0] and metadata[0]["00280010"]["Value"] == [40]
    one = client.retrieve_instance("1.2.3.4.1", volume.series_uid, instances[2].SOPInstanceUID)
    assert np.array_equal(one.pixel_array, volume.array[2])


def test_no_token_401_outsider_404_revoked_401(live_server, two_series):
    project, volumes = two_series
    root = f"{live_server.url}/p/{project.pk}/dicom-web"
    assert requests.get(f"{root}/series", timeout=30).status_code == 401
    assert requests.get(f"{root}/series", headers={"Authorization": "Bearer bmd_wrong"}, timeout=30).status_code == 401
    outsider = UserFactory()
    _, token = create_token(outsider)
    answer = requests.get(f"{root}/series", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 404
    member = MembershipFactory(project=project, role="pi").user
    row, token = create_token(member)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{root}/series", headers=headers, timeout=30).status_code == 200
    # A series of another project is not found through this project's root.
    assert requests.get(f"{root}/studies/1.2.3.4.3/series/1.2.826.0.1.3680043.8.498.99/metadata",
                        headers=headers, timeout=30).status_code == 404
    from studies.dicomweb.tokens import revoke_token

    assert revoke_token(member, row.pk)
    assert requests.get(f"{root}/series", headers=headers, timeout=30).status_code == 401


def test_metadata_of_each_instance_equals_its_dataset(db, storage):
    """The per-slice metadata is built from a template; it must equal pydicom's own conversion of the slice."""
    from studies.dicomweb.instances import build_instances

    exam = ExamFactory()
    volume = _oblique_volume("1.2.826.0.1.3680043.8.498.21", 5)
    stored, _ = store_volume(exam.patient.project, volume, exam=exam)
    instances = build_instances(stored, stored.load_volume(), patient_id="P1", study_date="20220601")
    for k in (0, 3, 5):
        expected = instances.dataset(k, with_pixels=False).to_json_dict()
        got = instances.metadata(k)
        del got["00020010"]
        assert got == expected


def test_series_bulk_data_is_every_frame_in_one_response(live_server, two_series):
    project, volumes = two_series
    user = MembershipFactory(project=project, role="annotator").user
    _, token = create_token(user)
    volume = volumes[0]
    answer = requests.get(f"{live_server.url}/p/{project.pk}/dicom-web/studies/1.2.3.4.1/series/{volume.series_uid}",
                          headers={"Authorization": f"Bearer {token}",
                                   "Accept": 'multipart/related; type="application/octet-stream"'}, timeout=60)
    assert answer.status_code == 200 and 'type="application/octet-stream"' in answer.headers["Content-Type"]
    boundary = answer.headers["Content-Type"].split("boundary=")[1].encode()
    parts = [p for p in answer.content.split(b"--" + boundary) if p not in (b"", b"--\r\n")]
    assert len(parts) == volume.shape[0]
    for k, part in enumerate(parts):
        head, body = part.split(b"\r\n\r\n", 1)
        assert f"/instances/{sop_uid_of(volume.series_uid, k)}/frames/1".encode() in head
        frame = np.frombuffer(body[:-2], dtype="<i2").reshape(volume.shape[1:])
        assert np.array_equal(frame, volume.array[k])

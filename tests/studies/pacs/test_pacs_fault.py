"""The PACS stops in the middle of a retrieval run by a real RQ worker: the job fails cleanly (no row, no
file, no leftover instances); Orthanc restarted on the same storage, the retried job succeeds; nothing is
duplicated."""

import re

import numpy as np
import pydicom
import pytest

from analysis.imaging.dicom_writer import write_ct_series
from analysis.imaging.volume import Volume
from studies import jobs
from studies.models import Job, JobState
from studies.pacs.models import PacsConnection, StoredSeries
from tests.conftest import wait_for
from tests.studies.pacs.conftest import stored_files
from tests.studies.pacs.orthanc import ThrottledProxy

N_SLICES = 80  # 80 x 512 x 512 x 2 bytes = 42 MB: far more than the socket buffers between Orthanc and us


def state_of(job):
    job.refresh_from_db()
    return job


@pytest.fixture
def big_series(tmp_path):
    rng = np.random.default_rng(11)
    array = rng.integers(-1000, 2000, size=(N_SLICES, 512, 512), dtype=np.int16)
    volume = Volume(array=array, affine=np.diag([0.75, 0.75, 1.25, 1.0]))
    files = write_ct_series(volume, tmp_path / "big", patient_id="FAULT-1")
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return volume, files, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def test_pacs_killed_mid_retrieval_then_retry_succeeds(orthanc_factory, rq_worker, project, pacs_storage,
                                                       big_series):
    volume, files, study, series = big_series
    server = orthanc_factory()
    stored, failed = server.stow(files)
    assert len(stored) == N_SLICES and not failed
    proxy = ThrottledProxy(server.http_port, rate=8e6)  # about 5 s for the whole series
    try:
        connection = PacsConnection.objects.create(name="slow", base_url=f"http://127.0.0.1:{proxy.port}/dicom-web",
                                                   max_retries=1, read_timeout_s=10)
        job = jobs.submit("pacs.pull_series", project=project, project_id=project.pk, study_uid=study,
                          series_uid=series, connection_id=connection.pk)
        worker = rq_worker(extra_env={"STORAGE_ROOT": str(pacs_storage)}, burst=True)
        # Stop the PACS dead once instances are arriving.
        wait_for(lambda: state_of(job).message.startswith("received"), timeout=60, interval=0.05,
                 what="the first instances to arrive")
        server.kill()
        worker.wait(timeout=120)
        job = state_of(job)
        assert job.state == JobState.FAILED
        assert f"retrieve series {series}: slow failed after 2 attempt(s)" in job.error
        # The first attempt saw the answer cut short (inside an instance, or exactly between two, depending on
        # where the kill lands in the stream); the retry found the PACS gone.
        assert "(first attempt: the multipart answer for series" in job.error
        assert re.search(r"ended (inside|after) instance \d+", job.error), job.error
        assert not StoredSeries.objects.exists()
        assert stored_files(pacs_storage) == []  # no volume, no half-written instance files

        # The PACS comes back on the same storage; the retried job stores the series once.
        server.start()
        jobs.retry(job)
        rq_worker(extra_env={"STORAGE_ROOT": str(pacs_storage)}, burst=True).wait(timeout=180)
        job = state_of(job)
        assert job.state == JobState.SUCCEEDED, job.error
        assert job.result["series_uid"] == series and job.result["created"] is True
        stored = StoredSeries.objects.get()
        np.testing.assert_array_equal(stored.load_volume().array, volume.array)

        # And once more: nothing duplicated.
        again = jobs.submit("pacs.pull_series", project=project, project_id=project.pk, study_uid=study,
                            series_uid=series, connection_id=connection.pk)
        rq_worker(extra_env={"STORAGE_ROOT": str(pacs_storage)}, burst=True).wait(timeout=120)
        assert state_of(again).result["created"] is False
        assert StoredSeries.objects.count() == 1
        assert stored_files(pacs_storage) == [stored.volume.name]
        assert Job.objects.filter(state=JobState.SUCCEEDED).count() == 2
    finally:
        proxy.close()

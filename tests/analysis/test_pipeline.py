"""The image pipeline on a registry exam: stored series -> segmentation -> ROI -> an immutable run.

Real CT: example_ct.nii.gz (abdomen, T12-L5 visible; see ../shared/data/README.md)."""

import dataclasses

import numpy as np
import pytest

from analysis import pipeline
from analysis.imaging.volume import load_nifti
from analysis.models import ImmutableRecordError, MeasurementRun
from studies import jobs
from studies.pacs.ingest import store_volume
from studies.review import actions
from tests.factories import ExamFactory


@pytest.fixture
def exam_with_series(db, shared_data):
    volume = load_nifti(shared_data / "totalseg" / "example_ct.nii.gz")
    volume = dataclasses.replace(volume, series_uid="1.2.826.0.1.3680043.8.498.1")
    exam = ExamFactory(region="abdomen")
    store_volume(exam.patient.project, volume, exam=exam, source="test")
    return exam


def test_exam_without_series_is_a_clear_error(db):
    exam = ExamFactory()
    with pytest.raises(pipeline.PipelineError, match="has no stored CT series"):
        pipeline.measure_exam(exam)


def test_measure_exam_records_an_immutable_run(exam_with_series):
    run = pipeline.measure_exam(exam_with_series, device="cuda")
    levels = {m.level: m for m in run.levels.all()}
    # The segmenter's own real-CT target (issue 5): every vertebra T12-L5 found with its level.
    assert {"T12", "L1", "L2", "L3", "L4", "L5"} <= set(levels)
    assert run.source == MeasurementRun.PIPELINE and run.segmenter_version
    assert run.parameters["erosion_mm"] == 3.0 and run.timings["total"] > 0
    assert run.series_uid == "1.2.826.0.1.3680043.8.498.1" and run.labels.name.endswith(".nii.gz")
    assert all(m.mean_hu is not None and m.roi_voxels > 0 for m in levels.values())
    # Every body segment, named or not, is stored with the run (SPEC section 6), with its index map.
    assert [s["index"] for s in run.segments] == list(range(1, len(run.segments) + 1))
    named = {s["level"]: s for s in run.segments if s["level"]}
    assert set(named) == set(levels)
    assert all(named[name]["mean_hu"] == pytest.approx(m.mean_hu, abs=1e-4) for name, m in levels.items())
    assert run.segment_labels.name.endswith("-segments.nii.gz")
    stored = load_nifti(run.segment_labels.path)
    assert set(np.unique(stored.array)) == {0} | {s["index"] for s in run.segments}
    # Recorded where the segmenter ran (the rule-based one on CPU), not what was asked.
    assert run.parameters["device"] == "cpu"
    run.flags = ["edited"]
    with pytest.raises(ImmutableRecordError):
        run.save()
    # Re-running gives a new run, never an overwrite.
    again = pipeline.measure_exam(exam_with_series)
    assert again.pk != run.pk and MeasurementRun.objects.filter(exam=exam_with_series).count() == 2


def test_measure_exam_job_in_a_real_worker(rq_worker, exam_with_series):
    job = jobs.submit("analysis.measure_exam", project=exam_with_series.patient.project, exam_id=exam_with_series.pk)
    rq_worker(burst=True).wait(timeout=180)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    run = MeasurementRun.objects.get(pk=job.result["measurement_run"])
    assert set(job.result["levels"]) == set(run.levels.values_list("level", flat=True))


def test_measurement_page_lists_runs_and_starts_jobs(client, member, exam_with_series):
    from django.urls import reverse

    project = exam_with_series.patient.project
    run = pipeline.measure_exam(exam_with_series)
    url = reverse("analysis:exam_measurements", args=[project.pk, exam_with_series.pk])
    client.force_login(member("annotator", project=project))
    page = client.get(url).content.decode()
    assert f"Run {run.pk}" in page and "L1" in page and 'id="measure"' not in page
    # The segmenter's confidence per level and its account of the naming are shown for review.
    confidence = run.parameters["level_confidence"]
    assert confidence and f"{confidence['L1']:.2f}" in page
    assert "How the levels were named" in page and run.parameters["notes"][0][:40] in page
    # Every body segment is listed, named or not: here the sacrum below L5 (example_ct), unnamed.
    unnamed = [seg for seg in run.segments if seg["level"] is None]
    assert unnamed and "sacrum" in unnamed[-1]["flags"]
    assert page.count('<tr class="unnamed">') == len(unnamed) and "not named" in page
    assert page.count("<tr") - 1 == len(run.segments)  # one header row
    # The exam's case page (viewer and level review) is linked once the exam has a review case.
    case_url = reverse("review:case", args=[project.pk, exam_with_series.pk])
    assert 'id="case-link"' not in page and case_url not in page
    assert actions.open_cases(project) == 1
    page = client.get(url).content.decode()
    assert f'<a href="{case_url}" id="case-link">' in page
    assert client.post(url).status_code == 403
    client.force_login(member("coordinator", project=project))
    response = client.post(url)
    assert response.status_code == 302 and "/jobs/" in response["Location"]

"""Mask editing in review: an edited segment map becomes a new run whose ROI and HU are measured again from the
stored CT; conflicts, bad uploads and the audit trail.

The phantom has exact HU, so every expected number is counted by hand. Spacing 1 mm, erosion 3 mm: the SPEC
ellipsoid is the ball of radius 3 voxels, which reaches exactly 3 voxels along each axis, so eroding an
axis-aligned box removes 3 voxels from each face (a box of a x b x c voxels keeps (a-6)(b-6)(c-6)).

    volume (40, 40, 60) voxels (z, y, x), 0 HU outside the bodies
    segment 1 = L1: z 2..17, y 10..29, x 10..49 (16 x 20 x 40); x 10..29 at 100 HU, x 30..49 at 300 HU
    segment 2 = L2: z 22..37, y 10..29, x 10..49 (16 x 20 x 40); 150 HU everywhere

Before the edit L1's ROI is 10 x 14 x 34 = 4760 voxels, 17 of its 34 columns at 100 HU and 17 at 300 HU:
mean 200 HU, median 200 HU (the two middle values are 100 and 300). Erasing the right half of L1 (x >= 30)
leaves the box 16 x 20 x 20: ROI 10 x 14 x 14 = 1960 voxels, all 100 HU (mean = median = 100, SD 0), body
16 * 20 * 20 = 6400 voxels = 6.4 ml. L2 stays 4760 voxels at 150 HU.
"""

import gzip

import numpy as np
import pytest
from auditlog.models import LogEntry
from django.core.files.base import ContentFile

from analysis.imaging.volume import Volume
from analysis.measurement import measure_levels, measure_segments, segments_json
from analysis.models import LevelMeasurement, MeasurementRun
from analysis.modeling.records import chosen_runs
from analysis.segmenters import reviewed_reference_runs
from analysis.segmentation.levels import VERSE_LABEL, BodySegment
from studies.models import Exam
from studies.pacs.ingest import store_volume
from studies.review import actions
from studies.review.maskedit import MaskEditError, save_mask_edit
from studies.review.models import ReviewCase, ReviewEvent
from studies.review.relabel import _nifti_bytes
from tests.factories import ExamFactory, MembershipFactory

SHAPE = (40, 40, 60)


def _phantom():
    hu = np.zeros(SHAPE, dtype=np.int16)
    index = np.zeros(SHAPE, dtype=np.uint8)
    hu[2:18, 10:30, 10:30], hu[2:18, 10:30, 30:50] = 100, 300
    index[2:18, 10:30, 10:50] = 1
    hu[22:38, 10:30, 10:50] = 150
    index[22:38, 10:30, 10:50] = 2
    return hu, index


@pytest.fixture
def case(db, storage):
    exam = ExamFactory(region="both")
    hu, index = _phantom()
    volume = Volume(array=hu, affine=np.eye(4), series_uid="1.2.3.4.77", meta={"study_uid": "1.2.3.4"})
    store_volume(exam.patient.project, volume, exam=exam, source="test phantom")
    names = {1: "L1", 2: "L2"}
    verse = np.zeros(256, dtype=np.uint8)
    for i, name in names.items():
        verse[i] = VERSE_LABEL[name]
    confidence = {"L1": 0.9, "L2": 0.9}
    levels = measure_levels(volume, verse[index], level_confidence=confidence)
    segments = segments_json(measure_segments(volume, index, [BodySegment(i, n, 0.9) for i, n in names.items()]))
    run = MeasurementRun(exam=exam, segmenter_version="phantom-truth", series_uid=volume.series_uid,
                         parameters={"erosion_mm": 3.0, "level_confidence": confidence}, segments=segments)
    run.labels.save("l.nii.gz", ContentFile(_nifti_bytes(volume, verse[index])), save=False)
    run.segment_labels.save("s.nii.gz", ContentFile(_nifti_bytes(volume, index)), save=False)
    run.save()
    LevelMeasurement.objects.bulk_create([LevelMeasurement(run=run, level=m.level, mean_hu=m.mean_hu,
                                                           median_hu=m.median_hu, sd_hu=m.sd_hu,
                                                           roi_voxels=m.roi_voxels, body_volume_ml=m.body_volume_ml,
                                                           flags=m.flags) for m in levels.values()])
    actions.open_cases(exam.patient.project)
    return ReviewCase.objects.get(exam=exam)


def _erased_right_half():
    _, index = _phantom()
    index[2:18, 10:30, 30:50] = 0
    return index


def _reader(case):
    return MembershipFactory(project=case.project, role="annotator").user


def test_the_phantom_measures_as_counted_by_hand(case):
    levels = {m.level: m for m in case.base_run.levels.all()}
    assert (levels["L1"].roi_voxels, levels["L1"].mean_hu, levels["L1"].median_hu) == (4760, 200.0, 200.0)
    assert (levels["L2"].roi_voxels, levels["L2"].mean_hu) == (4760, 150.0)


def test_erasing_half_a_body_makes_a_new_run_measured_from_the_stored_ct(case):
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    base = case.base_run
    run = save_mask_edit(case, reading, reading.version, base.pk, gzip.compress(_erased_right_half().tobytes()),
                         user=reader)

    levels = {m.level: m for m in run.levels.all()}
    assert (levels["L1"].roi_voxels, levels["L1"].mean_hu, levels["L1"].median_hu, levels["L1"].sd_hu) == (
        1960, 100.0, 100.0, 0.0)
    assert levels["L1"].body_volume_ml == pytest.approx(6.4)
    assert (levels["L2"].roi_voxels, levels["L2"].mean_hu) == (4760, 150.0)  # untouched
    segments = {s["index"]: s for s in run.segments}
    assert segments[1]["roi_voxels"] == 1960 and segments[1]["mean_hu"] == 100.0
    # Provenance: who edited, from which run, what changed (16 x 20 x 20 = 6400 voxels removed from L1).
    edit = run.parameters["mask_edit"]
    assert run.parameters["reviewed"] is True and edit["editor"] == reader.username and edit["base_run"] == base.pk
    assert edit["segments"] == {"1": {"added": 0, "removed": 6400}}
    assert "mask_edited" in run.flags and run.created_by == reader and run.source == base.source
    # The old run is untouched; the case now reviews the new one; the exam's features use it.
    assert {m.level: m.roi_voxels for m in base.levels.all()} == {"L1": 4760, "L2": 4760}
    case.refresh_from_db()
    assert case.base_run_id == run.pk
    exams = Exam.objects.filter(pk=case.exam_id)
    assert chosen_runs(exams, "default") == {case.exam_id: run.pk}
    assert chosen_runs(exams, base.source) == {case.exam_id: run.pk}
    # Not yet a reviewed mask to compare segmenters on: that takes the case's acceptance.
    assert reviewed_reference_runs(case.project) == []
    # The stored segment map is the edited one.
    from studies.review.segments import segment_index_volume

    assert np.array_equal(segment_index_volume(run).array, _erased_right_half())
    # Audited: the reading's version, and the case's run with what changed, by the reader.
    entry = LogEntry.objects.get_for_object(case).filter(actor=reader).latest("timestamp")
    assert entry.changes_dict["base_run"] == [str(base.pk), str(run.pk)]
    assert "L1 +0 / -6400 voxels" in entry.changes_dict["mask_edit"][1]
    reading.refresh_from_db()
    assert reading.version == 2
    assert LogEntry.objects.get_for_object(reading).filter(actor=reader).exists()
    assert ReviewEvent.objects.filter(case=case, action="mask_edit", user=reader).exists()
    # Accepted as edited, the edited run is the case's reviewed mask.
    assert actions.decide(reading, reading.version, reader, "accept").result_run is None
    assert [r.pk for r in reviewed_reference_runs(case.project)] == [run.pk]


def test_model_versions_on_the_old_run_show_stale(case):
    from analysis.modeling.staleness import stale_reasons
    from analysis.models import ModelVersion

    base = case.base_run
    version = ModelVersion.objects.create(project=case.project, name="BDT", task="classification", algorithm="BDT",
                                          feature_set="chest", measurement_source="default",
                                          data_snapshot={"exam_ids": [case.exam_id], "measurement_source": "default",
                                                         "measurement_run_ids": [base.pk]})
    assert stale_reasons([version]) == {}
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    run = save_mask_edit(case, reading, 1, base.pk, gzip.compress(_erased_right_half().tobytes()), user=reader)
    assert f"run {base.pk} -> {run.pk}" in stale_reasons([version])[version.pk][0]


def test_a_case_changed_since_it_was_opened_is_refused_with_what_changed(client, case):
    reader, other = _reader(case), _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    opened = reading.version
    # Someone else renames a level meanwhile.
    actions.edit_levels(actions.working_reading(case, other, "annotator"), opened, other, "rename", index=2,
                        level="L3")
    n_runs = MeasurementRun.objects.count()
    client.force_login(reader)
    answer = client.post(f"/p/{case.project_id}/exams/{case.exam_id}/case/mask/?reading={reading.pk}"
                         f"&version={opened}&run={case.base_run_id}",
                         data=gzip.compress(_erased_right_half().tobytes()), content_type="application/gzip")
    assert answer.status_code == 409
    reply = answer.json()
    assert reply["version"] == opened + 1
    assert reply["changes"] == [f"{other}: renamed segment 2 to L3 (segment 2: L2 -> L3)"]
    assert MeasurementRun.objects.count() == n_runs
    case.refresh_from_db()
    assert case.base_run.segments[0]["roi_voxels"] == 4760  # nothing saved


@pytest.mark.parametrize("payload, message", [
    (gzip.compress(np.zeros((39, 40, 60), np.uint8).tobytes()), "holds 93600 voxels; the series has 96000"),
    (gzip.compress(np.full(SHAPE, 7, np.uint8).tobytes()), "segment indices [7]"),
    (np.zeros(SHAPE, np.uint8).tobytes(), "not gzip"),
    (gzip.compress(np.zeros((41, 40, 60), np.uint8).tobytes()), "more than the series' 96000 voxels"),
    (gzip.compress(_phantom()[1].tobytes()), "unchanged"),
])
def test_bad_uploads_are_refused_and_nothing_is_written(client, case, payload, message):
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    n_runs = MeasurementRun.objects.count()
    client.force_login(reader)
    answer = client.post(f"/p/{case.project_id}/exams/{case.exam_id}/case/mask/?reading={reading.pk}"
                         f"&version=1&run={case.base_run_id}", data=payload, content_type="application/gzip")
    assert answer.status_code == 400 and message in answer.json()["error"], answer.json()
    assert MeasurementRun.objects.count() == n_runs
    reading.refresh_from_db()
    assert reading.version == 1


def test_an_upload_over_the_size_limit_is_refused(case, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    reader = _reader(case)
    reading = actions.working_reading(case, reader, "annotator")
    noisy = np.random.default_rng(0).integers(0, 3, SHAPE, dtype=np.uint8)
    with pytest.raises(MaskEditError, match="limit is 100 bytes"):
        save_mask_edit(case, reading, 1, case.base_run_id, gzip.compress(noisy.tobytes()), user=reader)


def test_blinded_double_readings_cannot_edit_masks(case):
    from studies.review.models import Reading, ReadingKind

    reader = _reader(case)
    reading = Reading.objects.create(case=case, kind=ReadingKind.FIRST, reader=reader, level_map={"1": "L1"})
    with pytest.raises(MaskEditError, match="blinded double reading"):
        save_mask_edit(case, reading, 1, case.base_run_id, gzip.compress(_erased_right_half().tobytes()), user=reader)

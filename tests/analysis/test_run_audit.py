"""A measurement run's creation is audited with what identifies it and who made it, not its bulky contents
(per-segment list, parameters, timings stay in the run, which never changes)."""

from auditlog.models import LogEntry

from analysis.models import MeasurementRun
from studies.audit import acting_as
from tests.factories import ExamFactory, UserFactory


def test_a_runs_entry_names_its_identity_and_creator(db):
    reader, exam = UserFactory(), ExamFactory()
    with acting_as(reader):
        run = MeasurementRun.objects.create(
            exam=exam, source="bmdsite", segmenter_version="anatomy-1", code_version="abc123",
            series_uid="1.2.3", flags=["reviewed"], created_by=reader,
            parameters={"erosion_mm": 3.0, "notes": ["levels named in review"]}, timings={"segment": 1.5},
            segments=[{"index": i, "level": f"T{i}", "volume_ml": 20.0} for i in range(1, 13)])
    entry = LogEntry.objects.get_for_object(run).get(action=LogEntry.Action.CREATE)
    assert entry.actor == reader
    assert entry.additional_data == {"project_id": exam.patient.project_id, "patient_id": exam.patient_id,
                                     "actor": reader.username}
    after = {field: change[1] for field, change in entry.changes_dict.items()}
    assert after == {"exam": str(exam.pk), "source": "bmdsite", "segmenter_version": "anatomy-1",
                     "code_version": "abc123", "series_uid": "1.2.3", "labels": "", "segment_labels": "",
                     "flags": '["reviewed"]', "created_by": str(reader.pk)}

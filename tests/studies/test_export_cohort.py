"""export_cohort: one row per patient exam with the SPEC columns; formula-like cells neutralised; logged."""

import csv

from django.core.management import call_command

from studies.models import AccessLog
from studies.registry import set_split
from tests.factories import ExamFactory, PatientFactory, ProjectFactory, QCTResultFactory


def test_export_rows_and_columns(db, tmp_path):
    project = ProjectFactory(name="Export me")
    qct = QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym="A1")),
                           bmd_l1=70.0, bmd_l2=80.0)
    set_split(qct.exam, "validation")
    QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym="=cmd|' /C calc'!A0")),
                     bmd_l1=130.0)
    QCTResultFactory(bmd_l1=50.0)  # another project's patient is not exported
    out = tmp_path / "cohort.csv"
    call_command("export_cohort", "--project", "Export me", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert [r["patient_id"] for r in rows] == ["'=cmd|' /C calc'!A0", "A1"]
    first = rows[1]
    assert first["exam_date"] == "2022-06-01"
    assert first["qct_bmd"] == "75" and first["category"] == "osteoporosis" and first["split"] == "validation"
    assert rows[0]["category"] == "normal" and rows[0]["split"] == ""
    assert AccessLog.objects.filter(project=project, action="export_cohort_csv").count() == 1


def test_export_to_missing_folder_writes_nothing(db, tmp_path):
    import pytest
    from django.core.management.base import CommandError

    ProjectFactory(name="P")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_cohort", "--project", "P", "--out", str(tmp_path / "no" / "x.csv"))
    with pytest.raises(CommandError, match="no project named"):
        call_command("export_cohort", "--project", "missing", "--out", str(tmp_path / "x.csv"))

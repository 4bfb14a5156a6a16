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


# --- issue 10: the export re-imports unchanged, and follows the patient list's filters ----------------------

ROUND_TRIP_CSV = (
    "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split,study_uid,series_uid,scanner_model,kvp,"
    "slice_thickness_mm,contrast,birth_year,levels_note\n"
    'R001,F,66,2022-05-03,chest,95.5,97.1,,train,1.2.840.10008.1,1.2.840.10008.1.7,SOMATOM Force,120,0.625,no,'
    '1956,"L2 fractured, replaced by L3"\n'
    "R001,F,67,2023-05-10,both,93.25,,,validation,,,,100,1.25,yes,1956,\n"
    "R002,M,,2021-01-02,abdomen,150.2,149.8,151,,,,Revolution CT,,,no,,\n"
)


def _export(project_name, tmp_path, name):
    out = tmp_path / name
    call_command("export_cohort", "--project", project_name, "--out", str(out))
    return out.read_text(encoding="utf-8")


def test_export_reimports_unchanged(db, tmp_path):
    source = tmp_path / "source.csv"
    source.write_text(ROUND_TRIP_CSV, encoding="utf-8")
    call_command("import_qct", str(source), "--project", "First")
    first = _export("First", tmp_path, "first.csv")
    rows = list(csv.DictReader(first.splitlines()))
    # Everything the import accepts comes back under its own column name (values from ROUND_TRIP_CSV).
    assert rows[0] == {
        "patient_id": "R001", "sex": "F", "age": "66", "exam_date": "2022-05-03", "region": "chest",
        "bmd_l1": "95.5", "bmd_l2": "97.1", "bmd_l3": "", "qct_bmd": "96.3", "category": "osteopenia",
        "split": "train", "excluded": "no", "study_uid": "1.2.840.10008.1", "contrast": "no",
        "series_uid": "1.2.840.10008.1.7", "scanner_model": "SOMATOM Force", "kvp": "120",
        "slice_thickness_mm": "0.625", "birth_year": "1956", "levels_note": "L2 fractured, replaced by L3",
    }
    assert rows[1]["bmd_l1"] == "93.25" and rows[1]["contrast"] == "yes" and rows[1]["kvp"] == "100"
    assert rows[2]["age"] == "" and rows[2]["split"] == "" and rows[2]["birth_year"] == ""
    # The export imports as it is into a fresh project, and exporting that gives the same file.
    call_command("import_qct", str(tmp_path / "first.csv"), "--project", "Second")
    assert _export("Second", tmp_path, "second.csv") == first


def test_export_follows_the_patient_list_filters(coordinator_client, project):
    from django.urls import reverse

    for pseudonym, bmd, split in [("F1", 70.0, "train"), ("F2", 75.0, "test"), ("F3", 150.0, "train")]:
        qct = QCTResultFactory(exam=ExamFactory(patient=PatientFactory(project=project, pseudonym=pseudonym)),
                               bmd_l1=bmd)
        set_split(qct.exam, split)
    list_url = reverse("studies:patient_list", args=[project.pk])
    page = coordinator_client.get(list_url, {"category": "osteoporosis", "split": "train", "per_page": "25"})
    # The list's export link carries its filters (not the page size).
    href = _export_href(page.content.decode())
    assert href == reverse("studies:export_csv", args=[project.pk]) + "?category=osteoporosis&split=train"
    response = coordinator_client.get(href)
    rows = list(csv.DictReader(response.content.decode().splitlines()))
    assert [r["patient_id"] for r in rows] == ["F1"]
    everything = coordinator_client.get(reverse("studies:export_csv", args=[project.pk]))
    assert len(list(csv.DictReader(everything.content.decode().splitlines()))) == 3


def _export_href(html):
    import html as html_lib
    import re

    return html_lib.unescape(re.search(r'id="export-csv" href="([^"]+)"', html).group(1))

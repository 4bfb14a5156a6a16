"""import_qct: every bad row reported as 'line N: reason' (physical lines, header = line 1), atomic."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from studies.models import Exam, Patient, Project, QCTResult

HEADER = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split,study_uid\n"
GOOD = [
    "P001,F,66,2022-05-03,chest,95.5,97.1,,train,1.2.840.10008.1\n",
    "P002,M,59,2023-04-01,abdomen,150.2,,,test,\n",
]


def write(tmp_path, text, name="qct.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_import(path, capsys, project="Study A"):
    with pytest.raises(CommandError) as excinfo:
        call_command("import_qct", str(path), "--project", project)
    return capsys.readouterr().err.splitlines(), str(excinfo.value)


def test_good_file_imports_everything(db, tmp_path, capsys):
    path = write(tmp_path, HEADER + "".join(GOOD))
    call_command("import_qct", str(path), "--project", "Study A")
    project = Project.objects.get(name="Study A")
    assert Patient.objects.filter(project=project).count() == 2
    qct = QCTResult.objects.get(exam__patient__pseudonym="P001")
    assert qct.qct_bmd == pytest.approx((95.5 + 97.1) / 2)
    assert qct.category == "osteopenia"
    assert Exam.objects.get(patient__pseudonym="P002").cohort_memberships.get().split == "test"
    assert "imported 2 row(s)" in capsys.readouterr().out


BAD_ROWS = [
    ("P003,F,70,2022-05-03,chest,450,,,train,\n", "bmd_l1: BMD 450 mg/cm3 is outside 0-400 mg/cm3"),
    ("P003,F,70,2022-05-03,chest,0.85,,,train,\n", "looks like an areal DXA value in g/cm2"),
    ("P003,F,70,2022-05-03,chest,-5,,,train,\n", "outside 0-400"),
    ("P003,F,70,2022-13-03,chest,90,,,train,\n", "exam_date '2022-13-03' is not a valid date"),
    ("P003,F,70,03/05/2022,chest,90,,,train,\n", "exam_date '03/05/2022' is not a date in YYYY-MM-DD form"),
    ("P003,X,70,2022-05-03,chest,90,,,train,\n", "sex 'X' is not F or M"),
    ("P003,F,70,2022-05-03,neck,90,,,train,\n", "region 'neck' is not chest, abdomen or both"),
    ("P003,F,70,2022-05-03,chest,,,,train,\n", "no BMD value"),
    ("P003,F,70,2022-05-03,chest,=1+2,,,train,\n", "formula cell"),
    ("@SUM(A1),F,70,2022-05-03,chest,90,,,train,\n", "formula cell"),
    ("P003,F,70,2022-05-03,chest,90,,,holdout,\n", "split 'holdout' is not train, validation or test"),
    ("P003,F,70,2022-05-03,chest,90,,,train,1.2.abc\n", "StudyInstanceUID (0020,000D)"),
    ("P003,F,700,2022-05-03,chest,90,,,train,\n", "age 700 is outside 0-120"),
    ("P003,F,70,2022-05-03,chest,90,,\n", "8 cells, the header has 10"),
]


@pytest.mark.parametrize("row, reason", BAD_ROWS)
def test_bad_row_names_line_and_reason_and_stores_nothing(db, tmp_path, capsys, row, reason):
    path = write(tmp_path, HEADER + "".join(GOOD) + row)
    errors, message = run_import(path, capsys)
    assert len(errors) == 1
    assert errors[0].startswith("line 4: ")
    assert reason in errors[0]
    assert "nothing was imported" in message
    # Atomic: the two good rows were not stored either (the project itself is not left behind).
    assert Patient.objects.count() == 0
    assert not Project.objects.filter(name="Study A").exists()


def test_duplicate_ids_and_every_bad_line_listed(db, tmp_path, capsys):
    text = HEADER + GOOD[0] + GOOD[1] + GOOD[0] + "P004,F,61,2022-07-01,chest,450,,,,\n"
    errors, _ = run_import(write(tmp_path, text), capsys)
    assert errors == [
        "line 4: duplicate of line 2 (patient P001, exam 2022-05-03)",
        "line 5: bmd_l1: BMD 450 mg/cm3 is outside 0-400 mg/cm3",
    ]


def test_conflicting_sex_for_same_patient(db, tmp_path, capsys):
    text = HEADER + GOOD[0] + "P001,M,67,2023-05-03,chest,95,,,test,\n"
    errors, _ = run_import(write(tmp_path, text), capsys)
    assert errors == ["line 3: patient P001 has sex F on line 2"]


def test_unknown_and_missing_columns(db, tmp_path, capsys):
    errors, _ = run_import(write(tmp_path, "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,mood\n"), capsys)
    assert errors[0] == "line 1: missing column(s) bmd_l3"
    assert errors[1].startswith("line 1: unknown column(s) 'mood'")


def test_line_numbers_count_physical_lines(db, tmp_path, capsys):
    # A quoted study description spanning two lines: the bad row after it is physical line 4... no, 5.
    header = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,levels_note\n"
    text = header + 'P001,F,66,2022-05-03,chest,95,,,"L2 fractured,\nreplaced by L3"\n' + \
        "P002,F,66,2022-05-03,chest,95,,,\n" + "P003,F,66,2022-05-03,chest,999,,,\n"
    errors, _ = run_import(write(tmp_path, text), capsys)
    assert errors == ["line 5: bmd_l1: BMD 999 mg/cm3 is outside 0-400 mg/cm3"]


def test_reimport_updates_values_without_duplicates(db, tmp_path):
    path = write(tmp_path, HEADER + "".join(GOOD))
    call_command("import_qct", str(path), "--project", "Study A")
    write(tmp_path, HEADER + GOOD[0].replace("95.5", "60.5").replace("97.1", "61.5") + GOOD[1])
    call_command("import_qct", str(path), "--project", "Study A")
    assert Exam.objects.count() == 2
    qct = QCTResult.objects.get(exam__patient__pseudonym="P001")
    assert qct.qct_bmd == 61.0 and qct.category == "osteoporosis"


def test_missing_file_and_non_utf8(db, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_qct", str(tmp_path / "nope.csv"), "--project", "A")
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + "Pé01,F,66,2022-05-03,chest,95,,,,\n".encode("latin-1"))
    with pytest.raises(CommandError):
        call_command("import_qct", str(path), "--project", "A")

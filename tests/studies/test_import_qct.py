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


def test_import_is_an_edit_new_rows_at_version_1_changed_rows_at_the_next(db, tmp_path):
    # The bulk path (COPY on PostgreSQL) writes the edit version like a form save, so a form opened before the
    # import sees a conflict instead of overwriting it (was: NULL version on PostgreSQL, no bump on SQLite).
    path = write(tmp_path, HEADER + "".join(GOOD))
    call_command("import_qct", str(path), "--project", "Study A")
    assert set(QCTResult.objects.values_list("version", flat=True)) == {1}
    assert set(Exam.objects.values_list("version", flat=True)) == {1}
    write(tmp_path, HEADER + GOOD[0].replace("95.5", "60.5") + GOOD[1])
    call_command("import_qct", str(path), "--project", "Study A")
    versions = dict(QCTResult.objects.values_list("exam__patient__pseudonym", "version"))
    assert versions == {"P001": 2, "P002": 1}


def test_missing_file_and_non_utf8(db, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_qct", str(tmp_path / "nope.csv"), "--project", "A")
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + "Pé01,F,66,2022-05-03,chest,95,,,,\n".encode("latin-1"))
    with pytest.raises(CommandError):
        call_command("import_qct", str(path), "--project", "A")


# --- issue 10: rough edges of the import -------------------------------------------------------------------

FULL_HEADER = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split,study_uid,birth_year\n"


@pytest.mark.parametrize("cell, column, code", [
    ("P0\x0003", "patient_id", "U+0000"),   # NUL: PostgreSQL refuses it in text (was a DataError, a 500)
    ("P0\x0703", "patient_id", "U+0007"),   # BEL
    ("L2\x1b[31m", "levels_note", "U+001B"),  # an escape sequence in a note
    ("1.2\x7f", "study_uid", "U+007F"),     # DEL
])
def test_control_characters_are_refused_with_line_and_column(db, tmp_path, capsys, cell, column, code):
    header = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,study_uid,levels_note\n"
    values = {"patient_id": "P003", "study_uid": "", "levels_note": ""}
    values[column] = cell
    row = f"{values['patient_id']},F,70,2022-05-03,chest,90,,,{values['study_uid']},{values['levels_note']}\n"
    good = "P001,F,66,2022-05-03,chest,95.5,97.1,,,\n"
    errors, message = run_import(write(tmp_path, header + good + row), capsys)
    assert errors == [f"line 3: {column}: control character not allowed ({code})"]
    assert "nothing was imported" in message
    assert Patient.objects.count() == 0


def test_tab_and_line_break_in_a_quoted_cell_are_allowed(db, tmp_path):
    header = "patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,levels_note\n"
    text = header + 'P001,F,66,2022-05-03,chest,95,,,"L2 fractured,\treplaced\nby L3"\n'
    call_command("import_qct", str(write(tmp_path, text)), "--project", "Study A")
    assert QCTResult.objects.get().levels_note == "L2 fractured,\treplaced\nby L3"


def test_every_error_of_a_row_is_reported(db, tmp_path, capsys):
    # Four bad cells in one row: each is named (the old importer stopped at the first, sex).
    text = HEADER + GOOD[0] + "P003,X,700,2022-13-03,chest,450,,,holdout,\n"
    errors, _ = run_import(write(tmp_path, text), capsys)
    assert errors == [
        "line 3: sex 'X' is not F or M; age 700 is outside 0-120 years; exam_date '2022-13-03' is not a valid "
        "date; bmd_l1: BMD 450 mg/cm3 is outside 0-400 mg/cm3; split 'holdout' is not train, validation or test"
    ]


def test_semicolon_separated_file_gets_a_hint(db, tmp_path, capsys):
    text = HEADER.replace(",", ";") + GOOD[0].replace(",", ";").replace("95.5", "95,5")
    errors, _ = run_import(write(tmp_path, text), capsys)
    assert errors == ["line 1: the file looks semicolon-separated; save it as comma-separated (UTF-8) CSV"]


def test_tab_separated_file_gets_a_hint(db, tmp_path, capsys):
    errors, _ = run_import(write(tmp_path, HEADER.replace(",", "\t") + GOOD[0].replace(",", "\t")), capsys)
    assert errors == ["line 1: the file looks tab-separated; save it as comma-separated (UTF-8) CSV"]


@pytest.mark.parametrize("age, ok", [(71, True), (72, True), (73, True), (70, False), (74, False), (30, False)])
def test_age_is_checked_against_birth_year_and_exam_date(db, tmp_path, capsys, age, ok):
    # Born 1950, examined 2022: 71 or 72 years old; the rule is |2022 - 1950 - age| <= 1, so 71-73 pass.
    text = FULL_HEADER + f"P001,F,{age},2022-05-03,chest,95,,,,,1950\n"
    path = write(tmp_path, text)
    if ok:
        call_command("import_qct", str(path), "--project", "Study A")
        assert Patient.objects.get().birth_year == 1950
        assert Exam.objects.get().age_at_exam == age
    else:
        errors, _ = run_import(path, capsys)
        assert errors == [f"line 2: age {age} does not match birth_year 1950 and exam_date 2022-05-03 "
                          "(expected 71-73)"]


def test_birth_year_conflicts_within_the_file_and_with_the_registry(db, tmp_path, capsys):
    text = FULL_HEADER + "P001,F,72,2022-05-03,chest,95,,,,,1950\nP001,F,73,2023-05-03,chest,95,,,,,1951\n"
    errors, _ = run_import(write(tmp_path, text), capsys)
    assert errors == ["line 3: patient P001 has birth_year 1950 on line 2"]
    call_command("import_qct", str(write(tmp_path, FULL_HEADER + "P001,F,72,2022-05-03,chest,95,,,,,1950\n")),
                 "--project", "Study A")
    # A later file without birth_year: its age is still checked against the registered birth year.
    text = FULL_HEADER + "P001,F,40,2023-05-03,chest,95,,,,,\n"
    errors, _ = run_import(write(tmp_path, text), capsys, project="Study A")
    assert errors == ["line 2: age 40 does not match birth_year 1950 and exam_date 2023-05-03 (expected 72-74) "
                      "(the registered birth year)"]


def _freeze_main_cohort(project_name):
    from studies.models import Cohort

    Cohort.objects.filter(project__name=project_name, name=Cohort.DEFAULT_NAME).update(frozen=True)


def test_frozen_cohort_refuses_only_changed_splits_and_names_the_rows(db, tmp_path, capsys):
    path = write(tmp_path, HEADER + "".join(GOOD))
    call_command("import_qct", str(path), "--project", "Study A")
    _freeze_main_cohort("Study A")
    # The same file again, with corrected BMD values: the splits do not change, so it imports (was a 500,
    # "cohort 'main' is frozen", for every file with a split column).
    write(tmp_path, HEADER + GOOD[0].replace("95.5", "90.5") + GOOD[1])
    call_command("import_qct", str(path), "--project", "Study A")
    assert QCTResult.objects.get(exam__patient__pseudonym="P001").bmd_l1 == 90.5
    # A changed split, and a new exam put into the frozen cohort: refused, each row named; nothing stored.
    text = HEADER + GOOD[0].replace("train", "test").replace("90.5", "80.5") + GOOD[1] + \
        "P009,F,61,2022-07-01,chest,100,,,validation,\n" + "P010,F,61,2022-07-01,chest,100,,,,\n"
    errors, _ = run_import(write(tmp_path, text), capsys, project="Study A")
    assert errors == [
        "line 2: split cannot change: cohort 'main' is frozen by trained models",
        "line 4: split cannot change: cohort 'main' is frozen by trained models",
    ]
    assert QCTResult.objects.get(exam__patient__pseudonym="P001").bmd_l1 == 90.5
    assert not Patient.objects.filter(pseudonym__in=["P009", "P010"]).exists()


def test_import_is_audited_like_a_page_edit(db, tmp_path):
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    path = write(tmp_path, HEADER + "".join(GOOD))
    call_command("import_qct", str(path), "--project", "Study A")
    qct = QCTResult.objects.get(exam__patient__pseudonym="P001")
    entries = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(QCTResult))
    created = entries.get(object_pk=str(qct.pk), action=LogEntry.Action.CREATE)
    assert created.changes_dict["bmd_l1"] == ["None", "95.5"]
    assert created.additional_data == {"project_id": qct.exam.patient.project_id,
                                       "patient_id": qct.exam.patient_id}
    # 2 patients, 2 exams, 2 QCT results, 2 split memberships.
    assert LogEntry.objects.filter(action=LogEntry.Action.CREATE).exclude(
        content_type=ContentType.objects.get_for_model(Project)).count() == 8
    # Importing the same file again changes nothing and records nothing.
    call_command("import_qct", str(path), "--project", "Study A")
    assert not LogEntry.objects.filter(action=LogEntry.Action.UPDATE).exists()
    write(tmp_path, HEADER + GOOD[0].replace("95.5", "60.5").replace("97.1", "61.5") + GOOD[1])
    call_command("import_qct", str(path), "--project", "Study A")
    change = entries.get(object_pk=str(qct.pk), action=LogEntry.Action.UPDATE)
    assert change.changes_dict["bmd_l1"] == ["95.5", "60.5"]
    # qct_bmd is derived: (95.5 + 97.1) / 2 = 96.3 before, (60.5 + 61.5) / 2 = 61.0 after.
    assert change.changes_dict["qct_bmd"] == ["96.3", "61.0"]
    assert change.changes_dict["category"] == ["osteopenia", "osteoporosis"]


def test_bulk_audit_entries_say_what_a_save_would_say(db, django_user_model):
    """The import's CREATE entries (built by the database on PostgreSQL, in Python elsewhere) hold the text
    django-auditlog records for the stored values: ``str(value)`` of each non-empty field, ``str(object)``.

    The expected values are computed here from the rows read back, field by field, with ``smart_str`` as
    django-auditlog does; the file holds values whose text differs between Python and SQL unless handled:
    whole floats (Python writes 120.0), a mean with a long decimal expansion, 93.25 (Python rounds it to 93.2
    for the object's text, half to even), a quote, a backslash and a non-ASCII letter in text cells.
    """
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType
    from django.utils.encoding import smart_str

    from studies.importers import import_qct
    from studies.models import CohortMember

    user = django_user_model.objects.create_user("importer", email="imp@example.org")
    project = Project.objects.create(name="Study bulk audit")
    header = ("patient_id,sex,age,exam_date,region,bmd_l1,bmd_l2,bmd_l3,split,study_uid,scanner_model,kvp,"
              "slice_thickness_mm,contrast,birth_year,levels_note\n")
    rows = [
        '"P\\1 ""ü""",F,66,2022-05-03,chest,120,93.25,,train,1.2.3,"Scan ""X"" \\ 2",120,0.1,yes,1956,'
        '"L2 ""fractured"""\n',
        "P2,M,59,2023-04-01,abdomen,100.1,100.2,100.4,,,,,,no,,\n",
    ]
    import_qct(project, (header + "".join(rows)).encode(), source="bulk.csv", actor=user)
    fields = {Patient: ("project", "pseudonym", "sex", "birth_year"),
              Exam: ("patient", "exam_date", "age_at_exam", "region", "study_uid", "series_uid",
                     "scanner_model", "kvp", "slice_thickness_mm", "contrast"),
              QCTResult: ("exam", "bmd_l1", "bmd_l2", "bmd_l3", "levels_note", "qct_bmd", "category"),
              CohortMember: ("cohort", "exam", "split")}
    checked = 0
    for model, names in fields.items():
        for obj in model.objects.filter(pk__in=_pks_of(model, project)):
            entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(model),
                                         object_pk=str(obj.pk), action=LogEntry.Action.CREATE)
            expected = {"id": ["None", str(obj.pk)]}
            for name in names:
                value = getattr(obj, model._meta.get_field(name).attname)
                if value is not None and value != "":
                    expected[name] = ["None", smart_str(value)]
            assert entry.changes_dict == expected, model.__name__
            assert entry.object_repr == str(obj)
            assert entry.actor == user and entry.actor_email == "imp@example.org"
            assert entry.additional_data == {"project_id": project.pk, "patient_id": _patient_of(obj).pk,
                                             "actor": "importer"}
            checked += 1
    assert checked == 2 + 2 + 2 + 1
    qct = QCTResult.objects.get(exam__patient__pseudonym='P\\1 "ü"')
    assert LogEntry.objects.get_for_object(qct).get().object_repr.endswith(": 106.6 mg/cm3")  # (120+93.25)/2
    p2 = QCTResult.objects.get(exam__patient__pseudonym="P2")
    assert LogEntry.objects.get_for_object(p2).get().changes_dict["qct_bmd"] == ["None", "100.233"]
    exam = Exam.objects.get(patient__pseudonym='P\\1 "ü"')
    changes = LogEntry.objects.get_for_object(exam).get().changes_dict
    assert changes["kvp"] == ["None", "120.0"] and changes["slice_thickness_mm"] == ["None", "0.1"]
    assert changes["contrast"] == ["None", "True"] and changes["scanner_model"] == ["None", 'Scan "X" \\ 2']


def _pks_of(model, project):
    from studies.models import CohortMember

    if model is Patient:
        return Patient.objects.filter(project=project).values("pk")
    if model is Exam:
        return Exam.objects.filter(patient__project=project).values("pk")
    if model is QCTResult:
        return QCTResult.objects.filter(exam__patient__project=project).values("pk")
    assert model is CohortMember
    return CohortMember.objects.filter(cohort__project=project).values("pk")


def _patient_of(obj):
    if isinstance(obj, Patient):
        return obj
    if isinstance(obj, Exam):
        return obj.patient
    return obj.exam.patient

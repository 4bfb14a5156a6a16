"""Import of per-vertebra HU from another tool: one measurement run per exam, atomic, `line N: reason`."""

import datetime as dt

import pytest
from django.core.management import CommandError, call_command

from analysis.modeling.hu_import import HUImportError, import_hu_csv
from analysis.modeling.records import chosen_runs
from analysis.models import LevelMeasurement, MeasurementRun
from studies.models import Exam
from tests.factories import ExamFactory

HEADER = "patient_id,exam_date,level,mean_hu,median_hu,roi_voxels\n"


@pytest.fixture
def exams(project):
    return [ExamFactory(patient__project=project, patient__pseudonym=f"P{i}", exam_date=dt.date(2022, 6, 1))
            for i in (1, 2)]


def test_rows_become_one_run_per_exam_with_the_values(project, exams):
    data = HEADER + "P1,2022-06-01,T12,151.5,150,1200\nP1,2022-06-01,L1,148.25,,\nP2,2022-06-01,l2,-3,,\n"
    runs = import_hu_csv(data, project, source="TotalSegmentator")
    assert len(runs) == 2 and {r.source for r in runs} == {"TotalSegmentator"}
    values = {(m.run.exam.patient.pseudonym, m.level): (m.mean_hu, m.median_hu, m.roi_voxels)
              for m in LevelMeasurement.objects.select_related("run__exam__patient")}
    assert values == {("P1", "T12"): (151.5, 150.0, 1200), ("P1", "L1"): (148.25, None, None),
                      ("P2", "L2"): (-3.0, None, None)}
    # A second import is a new run; the latest run of the source is the one used.
    (again,) = import_hu_csv(HEADER + "P2,2022-06-01,L2,10,,\n", project, source="TotalSegmentator")
    assert chosen_runs(Exam.objects.filter(pk=exams[1].pk), "TotalSegmentator") == {exams[1].pk: again.pk}


@pytest.mark.parametrize("row,reason", [
    ("P1,2022-06-01,T13,100,,", "line 2: unknown level 'T13'"),
    ("P1,2022-06-01,T12,3072,,", "line 2: mean_hu 3072 is outside -1024..3071"),
    ("P1,2022-06-01,T12,-1025,,", "line 2: mean_hu -1025 is outside -1024..3071"),
    ("P9,2022-06-01,T12,100,,", "line 2: unknown patient 'P9'"),
    ("P1,2022-07-01,T12,100,,", "line 2: patient P1 has no exam on 2022-07-01"),
    ("P1,2022-06-01,T12,=1+2,,", "line 2: column mean_hu holds a formula cell"),
    ("P1,2022-06-01,T12,abc,,", "line 2: mean_hu 'abc' is not a number"),
    ("P1,2022-06-01,T12,100,,12.5", "line 2: roi_voxels '12.5' must be a whole number"),
    ("P1,01/06/2022,T12,100,,", "line 2: exam_date '01/06/2022' is not a date in YYYY-MM-DD form"),
])
def test_bad_rows_are_named_and_nothing_is_stored(project, exams, row, reason):
    # A good row as well: the import is atomic, so it must not be stored either.
    data = HEADER + row + "\nP2,2022-06-01,T12,120,,\n"
    with pytest.raises(HUImportError) as info:
        import_hu_csv(data, project, source="TotalSegmentator")
    assert info.value.errors[0].startswith(reason)
    assert not MeasurementRun.objects.exists() and not LevelMeasurement.objects.exists()


def test_duplicate_exam_and_level_is_refused(project, exams):
    data = HEADER + "P1,2022-06-01,T12,100,,\nP2,2022-06-01,T12,100,,\nP1,2022-06-01,t12,101,,\n"
    with pytest.raises(HUImportError) as info:
        import_hu_csv(data, project, source="TotalSegmentator")
    assert info.value.errors == ["line 4: duplicate of line 2 (patient P1, exam 2022-06-01, level T12)"]


def test_unknown_columns_and_reserved_source(project, exams):
    with pytest.raises(HUImportError, match="line 1: unknown column"):
        import_hu_csv("patient_id,exam_date,level,mean_hu,hu_max\n", project, source="x")
    with pytest.raises(HUImportError, match="reserved for the product's own pipeline"):
        import_hu_csv(HEADER + "P1,2022-06-01,T12,100,,\n", project, source="bmdsite")


def test_command_imports_and_fails_with_line_reasons(project, exams, tmp_path, capsys):
    good = tmp_path / "hu.csv"
    good.write_text(HEADER + "P1,2022-06-01,T12,100,,\nP1,2022-06-01,L1,98,,\n")
    call_command("import_hu", str(good), "--project", project.name, "--source", "TotalSegmentator")
    assert "imported 2 level value(s) as 1 TotalSegmentator measurement run(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "P1,2022-06-01,X1,100,,\n")
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_hu", str(bad), "--project", project.name, "--source", "TotalSegmentator")
    assert "line 2: unknown level 'X1'" in capsys.readouterr().err
    assert MeasurementRun.objects.count() == 1

"""CSV import of patients, exams and QCT values (one row per patient exam; SPEC section 6).

``parse_qct_csv`` checks every row and reports each problem as ``line N: reason`` (physical lines, the
header is line 1); ``import_qct_rows`` stores all rows in one transaction or none.
"""

from dataclasses import dataclass, field

from django.db import transaction

from . import validation
from .csvfiles import CSVFileError, line_order, read_rows
from .models import Exam, Patient, Project, QCTResult, Region, Sex, Split
from .registry import set_split

REQUIRED_COLUMNS = ("patient_id", "sex", "age", "exam_date", "region", "bmd_l1", "bmd_l2", "bmd_l3")
OPTIONAL_COLUMNS = (
    "split",
    "study_uid",
    "series_uid",
    "scanner_model",
    "kvp",
    "slice_thickness_mm",
    "contrast",
    "birth_year",
    "levels_note",
)


class CSVImportError(CSVFileError):
    """The file is unusable or has bad rows; ``errors`` lists ``line N: reason`` strings."""


@dataclass
class QCTRow:
    line: int
    patient_id: str
    sex: str
    age: int | None
    exam_date: object
    region: str
    bmd: dict
    split: str = ""
    study_uid: str = ""
    series_uid: str = ""
    scanner_model: str = ""
    kvp: float | None = None
    slice_thickness_mm: float | None = None
    contrast: bool = False
    birth_year: int | None = None
    levels_note: str = ""


@dataclass
class ImportPlan:
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    new_patients: int = 0
    new_exams: int = 0
    updated_exams: int = 0

    @property
    def ok(self):
        return not self.errors


def _parse_row(line, cells):
    patient_id = validation.row_patient_id(cells)
    if len(patient_id) > 64:
        raise ValueError("patient_id is longer than 64 characters")
    sex = cells["sex"].strip().upper()
    if sex not in Sex.values:
        raise ValueError(f"sex {cells['sex']!r} is not F or M")
    region = cells["region"].strip().lower()
    if region not in Region.values:
        raise ValueError(f"region {cells['region']!r} is not chest, abdomen or both")
    bmd = {}
    for level in ("l1", "l2", "l3"):
        try:
            bmd[level] = validation.parse_bmd(cells[f"bmd_{level}"])
        except ValueError as exc:
            raise ValueError(f"bmd_{level}: {exc}") from None
    if all(value is None for value in bmd.values()):
        raise ValueError("no BMD value: at least one of bmd_l1, bmd_l2, bmd_l3 is needed")
    split = cells.get("split", "").strip().lower()
    if split and split not in Split.values:
        raise ValueError(f"split {cells['split']!r} is not train, validation or test")
    study_uid = cells.get("study_uid", "").strip()
    validation.check_uid(study_uid)
    series_uid = cells.get("series_uid", "").strip()
    validation.check_uid(series_uid, "SeriesInstanceUID (0020,000E)")
    contrast_text = cells.get("contrast", "").strip().lower()
    if contrast_text not in ("", "yes", "no", "true", "false", "1", "0"):
        raise ValueError(f"contrast {cells['contrast']!r} is not yes or no")
    birth_year = validation.parse_number(cells.get("birth_year", ""), "birth_year", 1880, 2100)
    return QCTRow(
        line=line,
        patient_id=patient_id,
        sex=sex,
        age=validation.parse_age(cells["age"]),
        exam_date=validation.parse_date(cells["exam_date"]),
        region=region,
        bmd=bmd,
        split=split,
        study_uid=study_uid,
        series_uid=series_uid,
        scanner_model=cells.get("scanner_model", "").strip()[:100],
        kvp=validation.parse_number(cells.get("kvp", ""), "kvp", 40, 160),
        slice_thickness_mm=validation.parse_number(cells.get("slice_thickness_mm", ""), "slice_thickness_mm", 0.1, 20),
        contrast=contrast_text in ("yes", "true", "1"),
        birth_year=int(birth_year) if birth_year is not None else None,
        levels_note=cells.get("levels_note", "").strip()[:200],
    )


def parse_qct_csv(data, source="upload", project=None):
    """Check a QCT CSV (bytes or text). Returns an ImportPlan; ``plan.errors`` lists ``line N: reason``."""
    table = read_rows(data, source=source, required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS,
                      error=CSVImportError)
    plan = ImportPlan(errors=table.errors)
    seen = {}
    sex_of = {}
    for line, cells in table.rows:
        try:
            row = _parse_row(line, cells)
        except ValueError as exc:
            plan.errors.append(f"line {line}: {exc}")
            continue
        key = (row.patient_id, row.exam_date)
        if key in seen:
            plan.errors.append(
                f"line {line}: duplicate of line {seen[key]} (patient {row.patient_id}, exam {row.exam_date})"
            )
            continue
        first_sex = sex_of.setdefault(row.patient_id, (row.sex, line))
        if first_sex[0] != row.sex:
            plan.errors.append(f"line {line}: patient {row.patient_id} has sex {first_sex[0]} on line {first_sex[1]}")
            continue
        seen[key] = line
        plan.rows.append(row)
    plan.errors.sort(key=line_order)
    if project is not None:
        _compare_with_registry(plan, project)
    return plan


def _compare_with_registry(plan, project):
    """Count what the import will create or update, and refuse rows that contradict stored patients."""
    ids = {row.patient_id for row in plan.rows}
    patients = {p.pseudonym: p for p in Patient.objects.filter(project=project, pseudonym__in=ids)}
    existing = set(
        Exam.objects.filter(patient__in=patients.values()).values_list("patient__pseudonym", "exam_date")
    )
    plan.new_patients = len(ids - patients.keys())
    for row in plan.rows:
        stored = patients.get(row.patient_id)
        if stored and stored.sex != row.sex:
            plan.errors.append(f"line {row.line}: patient {row.patient_id} is registered with sex {stored.sex}")
        elif (row.patient_id, row.exam_date) in existing:
            plan.updated_exams += 1
        else:
            plan.new_exams += 1


def import_qct_rows(project, rows):
    """Store the rows of a checked plan: all or none. Existing exams (patient, date) get their values updated."""
    with transaction.atomic():
        patients = {p.pseudonym: p for p in Patient.objects.select_for_update().filter(project=project)}
        for row in rows:
            patient = patients.get(row.patient_id)
            if patient is None:
                patient = Patient.objects.create(
                    project=project, pseudonym=row.patient_id, sex=row.sex, birth_year=row.birth_year
                )
                patients[row.patient_id] = patient
            exam, _ = Exam.objects.get_or_create(patient=patient, exam_date=row.exam_date,
                                                 defaults={"region": row.region})
            exam_fields = {
                "age_at_exam": row.age,
                "region": row.region,
                "study_uid": row.study_uid or exam.study_uid,
                "series_uid": row.series_uid or exam.series_uid,
                "scanner_model": row.scanner_model or exam.scanner_model,
                "kvp": row.kvp if row.kvp is not None else exam.kvp,
                "slice_thickness_mm": row.slice_thickness_mm
                if row.slice_thickness_mm is not None else exam.slice_thickness_mm,
                "contrast": row.contrast,
            }
            _save_changed(exam, exam_fields)
            qct = QCTResult.objects.filter(exam=exam).first() or QCTResult(exam=exam)
            qct.exam = exam
            _save_changed(qct, {"bmd_l1": row.bmd["l1"], "bmd_l2": row.bmd["l2"], "bmd_l3": row.bmd["l3"],
                                "levels_note": row.levels_note or qct.levels_note}, force=qct.pk is None)
            if row.split:
                set_split(exam, row.split)
    return len(rows)


def _save_changed(obj, values, force=False):
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    for name in changed:
        setattr(obj, name, values[name])
    if changed or force:
        obj.save()


def import_qct_file(path, project_name):
    """Import a CSV file into the named project (created if missing). Raises CSVImportError listing rows."""
    with open(path, "rb") as handle:
        data = handle.read()
    with transaction.atomic():
        project, _ = Project.objects.get_or_create(name=project_name)
        plan = parse_qct_csv(data, source=str(path), project=project)
        if plan.errors:
            raise CSVImportError(plan.errors)
        import_qct_rows(project, plan.rows)
    return plan

"""CSV import of patients, exams and QCT values (one row per patient exam; SPEC section 6).

``parse_qct_csv`` checks every row and reports each row's problems together as ``line N: reason; reason``
(physical lines, the header is line 1); with a project it also compares the rows with the registry (sex and
birth year of stored patients, splits of a frozen cohort). ``import_qct`` checks and stores in one
transaction: all rows or none.

Storing is bulk work whatever the file's size: the patients, exams, QCT values and cohort memberships the
rows touch are read in a few chunked queries, then created and updated with bulk statements, and their audit
entries are written in bulk too (the same entries django-auditlog writes for a page edit). No query runs per
row: 200,000 rows take under a minute on an idle machine, where one query per row took about an hour.
"""

import datetime as dt
import gc
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from django.utils.encoding import smart_str

from . import bulkwrite, validation
from .csvfiles import CSVFileError, line_order, read_rows
from .models import Cohort, CohortMember, Exam, Patient, Project, QCTResult, Region, Sex, Split

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
# Columns of the export that the registry derives (from the BMD values and thresholds, and from exclusion
# flags): accepted so an exported file imports unchanged, and not read.
IGNORED_COLUMNS = ("qct_bmd", "category", "excluded")
# Age at the exam is exam year - birth year, or one less before the birthday; one more is tolerated as well
# (an age rounded to the nearest year, a birth year recorded one off), so |exam year - birth year - age| <= 1.
AGE_TOLERANCE_YEARS = 1
# Rows per query and per bulk statement: small enough for SQLite's limit on query parameters.
CHUNK = 2000
# The choices as sets, once: the enums' ``values`` builds a new list at each call, 600,000 times for 200,000 rows.
SEXES = frozenset(Sex.values)
REGIONS = frozenset(Region.values)
SPLITS = frozenset(Split.values)


class CSVImportError(CSVFileError):
    """The file is unusable or has bad rows; ``errors`` lists ``line N: reason`` strings."""


@dataclass
class QCTRow:
    line: int
    patient_id: str
    sex: str
    age: int | None
    exam_date: dt.date
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

    @property
    def counts(self):
        """What the import will do, as primitives (a job compares them with the preview the user confirmed)."""
        return {"rows": len(self.rows), "new_patients": self.new_patients, "new_exams": self.new_exams,
                "updated_exams": self.updated_exams}


def _check(errors, func, *args, prefix=""):
    """``func(*args)``, or None with its ValueError's message added to ``errors``."""
    try:
        return func(*args)
    except ValueError as exc:
        errors.append(f"{prefix}{exc}")
        return None


def _choice(text, name, choices, allowed_words, lower=True):
    value = text.strip().lower() if lower else text.strip().upper()
    if value not in choices:
        raise ValueError(f"{name} {text!r} is not {allowed_words}")
    return value


def _contrast(text):
    value = text.strip().lower()
    if value not in ("", "yes", "no", "true", "false", "1", "0"):
        raise ValueError(f"contrast {text!r} is not yes or no")
    return value in ("yes", "true", "1")


def _parse_row(line, cells):
    """A ``QCTRow``, or None and every problem of the row (each cell is checked, not only up to the first)."""
    errors = validation.formula_problems(cells)
    patient_id = cells["patient_id"].strip()
    if not patient_id:
        errors.append("patient_id is empty")
    elif len(patient_id) > 64:
        errors.append("patient_id is longer than 64 characters")
    if errors and any("formula" in e for e in errors):
        # A formula cell's other checks would only repeat that its value is not one.
        return None, errors
    sex = _check(errors, _choice, cells["sex"], "sex", SEXES, "F or M", False)
    age = _check(errors, validation.parse_age, cells["age"])
    exam_date = _check(errors, validation.parse_date, cells["exam_date"])
    region = _check(errors, _choice, cells["region"], "region", REGIONS, "chest, abdomen or both")
    bmd = {level: _check(errors, validation.parse_bmd, cells[f"bmd_{level}"], prefix=f"bmd_{level}: ")
           for level in ("l1", "l2", "l3")}
    if all(not cells[f"bmd_{level}"].strip() for level in ("l1", "l2", "l3")):
        errors.append("no BMD value: at least one of bmd_l1, bmd_l2, bmd_l3 is needed")
    split = ""
    if cells.get("split", "").strip():
        split = _check(errors, _choice, cells["split"], "split", SPLITS, "train, validation or test")
    study_uid = cells.get("study_uid", "").strip()
    _check(errors, validation.check_uid, study_uid)
    series_uid = cells.get("series_uid", "").strip()
    _check(errors, validation.check_uid, series_uid, "SeriesInstanceUID (0020,000E)")
    contrast = _check(errors, _contrast, cells.get("contrast", ""))
    birth_year = _check(errors, validation.parse_number, cells.get("birth_year", ""), "birth_year", 1880, 2100)
    if birth_year is not None and birth_year != int(birth_year):
        errors.append(f"birth_year {cells['birth_year'].strip()!r} is not a whole year")
    kvp = _check(errors, validation.parse_number, cells.get("kvp", ""), "kvp", 40, 160)
    thickness = _check(errors, validation.parse_number, cells.get("slice_thickness_mm", ""),
                       "slice_thickness_mm", 0.1, 20)
    scanner_model = cells.get("scanner_model", "").strip()
    if len(scanner_model) > 100:
        errors.append("scanner_model is longer than 100 characters")
    levels_note = cells.get("levels_note", "").strip()
    if len(levels_note) > 200:
        errors.append("levels_note is longer than 200 characters")
    if age is not None and birth_year is not None and exam_date is not None:
        _check(errors, check_age, age, int(birth_year), exam_date)
    if errors:
        return None, errors
    return QCTRow(
        line=line, patient_id=patient_id, sex=sex, age=age, exam_date=exam_date, region=region, bmd=bmd,
        split=split or "", study_uid=study_uid, series_uid=series_uid, scanner_model=scanner_model, kvp=kvp,
        slice_thickness_mm=thickness, contrast=contrast,
        birth_year=int(birth_year) if birth_year is not None else None, levels_note=levels_note,
    ), []


def check_age(age, birth_year, exam_date):
    """Refuse an age at exam (years) that the birth year and the exam date contradict."""
    expected = exam_date.year - birth_year
    if abs(expected - age) > AGE_TOLERANCE_YEARS:
        low, high = expected - AGE_TOLERANCE_YEARS, expected + AGE_TOLERANCE_YEARS
        raise ValueError(f"age {age} does not match birth_year {birth_year} and exam_date "
                         f"{exam_date:%Y-%m-%d} (expected {low}-{high})")


def parse_qct_csv(data, source="upload", project=None):
    """Check a QCT CSV (bytes or text). Returns an ImportPlan; ``plan.errors`` lists ``line N: reason``.

    With ``project``, the rows are also compared with its registry (see ``compare_with_registry``), without
    locking anything: that is for a preview; ``import_qct`` compares again under locks.
    """
    with _gc_paused():
        return _parse_qct_csv(data, source, project)


def _parse_qct_csv(data, source, project):
    table = read_rows(data, source=source, required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS + IGNORED_COLUMNS,
                      error=CSVImportError)
    plan = ImportPlan(errors=table.errors)
    seen = {}
    first_of = {}
    for line, cells in table.rows:
        row, problems = _parse_row(line, cells)
        if row is not None:
            key = (row.patient_id, row.exam_date)
            if key in seen:
                problems.append(f"duplicate of line {seen[key]} (patient {row.patient_id}, exam {row.exam_date})")
            else:
                seen[key] = line
            first = first_of.setdefault(row.patient_id, row)
            if first.sex != row.sex:
                problems.append(f"patient {row.patient_id} has sex {first.sex} on line {first.line}")
            if row.birth_year is not None:
                if first.birth_year is None:
                    # A patient's birth year may be given on any of its rows; the first row carries it on,
                    # as the patient is created from that row.
                    first.birth_year = row.birth_year
                elif first.birth_year != row.birth_year:
                    problems.append(f"patient {row.patient_id} has birth_year {first.birth_year} on line "
                                    f"{first.line}")
        if problems:
            plan.errors.append(f"line {line}: {'; '.join(problems)}")
        else:
            plan.rows.append(row)
    if project is not None and not plan.errors:
        compare_with_registry(plan, _registry_state(project, plan.rows))
    plan.errors.sort(key=line_order)
    return plan


@dataclass
class _RegistryState:
    """What the registry holds for the patients of an import (keys: pseudonym, (pseudonym, date), exam pk)."""

    project: Project
    patients: dict
    exams: dict
    qct: dict
    cohort: Cohort | None
    members: dict


def _chunks(items, size=CHUNK):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _registry_state(project, rows, lock=False):
    """Read the stored patients, exams, QCT values and main-cohort memberships the rows touch.

    With ``lock``, the rows read are locked (SELECT ... FOR UPDATE, in pseudonym order) until the transaction
    ends: a patient deleted or an exam edited meanwhile waits for the import, or the import sees the
    deletion and creates the patient anew, but never updates a row that is gone.
    """
    def query(queryset):
        return queryset.select_for_update() if lock else queryset

    ids = sorted({row.patient_id for row in rows})
    patients = {}
    for chunk in _chunks(ids):
        patients.update((p.pseudonym, p) for p in query(Patient.objects.filter(project=project,
                                                                                pseudonym__in=chunk)))
    by_pk = {p.pk: p for p in patients.values()}
    exams = {}
    for chunk in _chunks(sorted(by_pk)):
        for exam in query(Exam.objects.filter(patient_id__in=chunk)).order_by("pk"):
            exam.patient = by_pk[exam.patient_id]
            exams[(exam.patient.pseudonym, exam.exam_date)] = exam
    exam_by_pk = {e.pk: e for e in exams.values()}
    qct = {}
    for chunk in _chunks(sorted(exam_by_pk)):
        for result in query(QCTResult.objects.filter(exam_id__in=chunk)).order_by("pk"):
            result.exam = exam_by_pk[result.exam_id]
            qct[result.exam_id] = result
    # Locked too, so a training cannot freeze the cohort between this check of its splits and the commit.
    cohort = query(Cohort.objects.filter(project=project, name=Cohort.DEFAULT_NAME)).first()
    members = {}
    if cohort is not None:
        for chunk in _chunks(sorted(exam_by_pk)):
            members.update((m.exam_id, m) for m in query(CohortMember.objects.filter(cohort=cohort,
                                                                                     exam_id__in=chunk)))
    return _RegistryState(project, patients, exams, qct, cohort, members)


def cohort_is_frozen(cohort):
    """Whether the splits of ``cohort`` may no longer change (a model was trained on them)."""
    return cohort is not None and cohort.frozen


def compare_with_registry(plan, state):
    """Count what the import will create or update, and refuse rows that contradict the registry: a stored
    patient's sex or birth year, or a split change in a frozen cohort (only a change is refused; the same
    split again, or no split, is fine)."""
    frozen = cohort_is_frozen(state.cohort)
    new_ids = set()
    plan.new_exams = plan.updated_exams = 0
    for row in plan.rows:
        problems = []
        stored = state.patients.get(row.patient_id)
        if stored is None:
            new_ids.add(row.patient_id)
        else:
            if stored.sex != row.sex:
                problems.append(f"patient {row.patient_id} is registered with sex {stored.sex}")
            if row.birth_year is not None and stored.birth_year not in (None, row.birth_year):
                problems.append(f"patient {row.patient_id} is registered with birth year {stored.birth_year}")
            elif row.birth_year is None and stored.birth_year is not None and row.age is not None:
                try:
                    check_age(row.age, stored.birth_year, row.exam_date)
                except ValueError as exc:
                    problems.append(f"{exc} (the registered birth year)")
        exam = state.exams.get((row.patient_id, row.exam_date))
        if row.split and frozen:
            member = state.members.get(exam.pk) if exam else None
            if (member.split if member else "") != row.split:
                problems.append(f"split cannot change: cohort {state.cohort.name!r} is frozen by trained models")
        if problems:
            plan.errors.append(f"line {row.line}: {'; '.join(problems)}")
        elif exam is None:
            plan.new_exams += 1
        else:
            plan.updated_exams += 1
    plan.new_patients = len(new_ids)
    plan.errors.sort(key=line_order)


# PostgreSQL's codes for a deadlock and a serialization failure between concurrent transactions.
CONFLICTS = ("40P01", "40001")


class RegistryChanged(CSVImportError):
    """The registry changed under the import (a concurrent delete or edit); nothing was stored."""


def import_qct(project, data, *, source, actor=None, progress=None, expected=None):
    """Check a QCT CSV and store it in ``project``: all rows or none.

    Parameters
    ----------
    project : Project
    data : bytes or str
        The file's content.
    source : str
        The file's name, for messages.
    actor : User or None
        Recorded as the author of the audit entries.
    progress : callable(fraction, message) or None
    expected : dict or None
        ``ImportPlan.counts`` of the preview the user confirmed: if the registry changed since (a patient
        deleted, an exam added), the import is refused rather than doing something else than was shown.

    Returns
    -------
    ImportPlan

    Raises
    ------
    CSVImportError
        Listing ``line N: reason`` for every bad row; ``RegistryChanged`` when the registry changed under
        the import. Nothing is stored in either case.
    """
    with _gc_paused():
        return _import_qct(project, data, source=source, actor=actor, progress=progress, expected=expected)


@contextmanager
def _gc_paused():
    """Hundreds of thousands of small objects stay alive while a file is checked and stored; the cyclic
    garbage collector would scan them all again and again (a third of the time for 200,000 rows) and find
    nothing to free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _import_qct(project, data, *, source, actor, progress, expected):
    report = progress or (lambda fraction, message="": None)
    report(0.0, "checking the file")
    plan = parse_qct_csv(data, source=source)
    if plan.errors:
        raise CSVImportError(plan.errors)
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Foreign keys are checked at each statement, not at the commit, so a conflict surfaces
                # here, inside this function, even when a caller's transaction commits later.
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            # One import per project at a time (two imports creating the same new patient would collide),
            # and the thresholds the categories are derived with cannot change until the import commits.
            project = Project.objects.select_for_update().get(pk=project.pk)
            report(0.2, f"reading the registry for {len(plan.rows)} row(s)")
            state = _registry_state(project, plan.rows, lock=True)
            compare_with_registry(plan, state)
            if plan.errors:
                raise CSVImportError(plan.errors)
            if expected is not None and plan.counts != expected:
                raise RegistryChanged([
                    f"{source}: the registry changed since the preview ({_describe(expected)} then, "
                    f"{_describe(plan.counts)} now: a patient or exam was added or deleted meanwhile); "
                    "nothing was imported; check the file again"
                ])
            _store(project, plan.rows, state, actor, report)
    except (IntegrityError, OperationalError) as exc:
        # A concurrent delete of a patient the import refers to, or a deadlock with one: the transaction
        # rolled back as a whole. Other database errors (a lost connection) are not the registry's doing.
        if not isinstance(exc, IntegrityError) and getattr(exc.__cause__, "sqlstate", None) not in CONFLICTS:
            raise
        raise RegistryChanged([
            f"{source}: the registry changed while importing ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'conflict'}); "
            "nothing was imported; run the import again"
        ]) from exc
    report(1.0, f"imported {len(plan.rows)} row(s)")
    return plan


def _describe(counts):
    return (f"{counts['new_patients']} new patient(s), {counts['new_exams']} new exam(s), "
            f"{counts['updated_exams']} updated exam(s)")


EXAM_FIELDS = ("age_at_exam", "region", "study_uid", "series_uid", "scanner_model", "kvp", "slice_thickness_mm",
               "contrast")
QCT_FIELDS = ("bmd_l1", "bmd_l2", "bmd_l3", "levels_note", "qct_bmd", "category")


def _exam_values(row, exam):
    """The exam's fields after the row: an empty optional cell keeps what is stored."""
    return {
        "age_at_exam": row.age,
        "region": row.region,
        "study_uid": row.study_uid or (exam.study_uid if exam else ""),
        "series_uid": row.series_uid or (exam.series_uid if exam else ""),
        "scanner_model": row.scanner_model or (exam.scanner_model if exam else ""),
        "kvp": row.kvp if row.kvp is not None else (exam.kvp if exam else None),
        "slice_thickness_mm": row.slice_thickness_mm if row.slice_thickness_mm is not None
        else (exam.slice_thickness_mm if exam else None),
        "contrast": row.contrast,
    }


def _store(project, rows, state, actor, report):
    """Create and update everything the checked rows say, with bulk statements and bulk audit entries.

    New rows are built as tuples of stored values, not model instances (200,000 instances alone take
    longer than the whole import); rows already stored were read as instances and are updated field by field.
    """
    audit = _BulkAudit(project, actor)
    thresholds = project.thresholds
    now = timezone.now()

    # Patients: new ones, and a birth year filled in where the registry had none.
    patient_pk = {pseudonym: p.pk for pseudonym, p in state.patients.items()}
    new_patients = {}
    birth_years = []
    for row in rows:
        stored = state.patients.get(row.patient_id)
        if stored is None:
            new_patients.setdefault(row.patient_id, row)
        elif row.birth_year is not None and stored.birth_year is None:
            stored.birth_year = row.birth_year
            audit.updated(stored, {"birth_year": [None, row.birth_year]})
            birth_years.append((stored.pk, row.birth_year))
    report(0.3, f"storing {len(new_patients)} new patient(s)")
    patient_fields = ("project", "pseudonym", "sex", "birth_year", "created_at")
    pks = bulkwrite.insert(Patient, patient_fields, [(project.pk, pid, row.sex, row.birth_year, now)
                                                     for pid, row in new_patients.items()])
    patient_pk.update(zip(new_patients, pks))
    audit.created_many(Patient, ("project", "pseudonym", "sex", "birth_year"), pks, list(new_patients), pks, (
        {"project": project.pk, "pseudonym": pid, "sex": row.sex, "birth_year": row.birth_year}
        for pid, row in new_patients.items()))
    bulkwrite.update(Patient, ("birth_year",), birth_years)
    audit.write()

    # Exams: new ones, and the changed fields of stored ones (an empty optional cell keeps the stored value).
    exam_pk, new_exams, exam_updates = [], [], []
    for row in rows:
        exam = state.exams.get((row.patient_id, row.exam_date))
        values = _exam_values(row, exam)
        if exam is None:
            new_exams.append((row, values))
            exam_pk.append(None)
            continue
        changes = {name: [getattr(exam, name), value] for name, value in values.items()
                   if getattr(exam, name) != value}
        if changes:
            for name, (_, value) in changes.items():
                setattr(exam, name, value)
            audit.updated(exam, changes)
            exam_updates.append((exam.pk, *(getattr(exam, name) for name in EXAM_FIELDS)))
        exam_pk.append(exam.pk)
    report(0.45, f"storing {len(new_exams)} new exam(s), updating {len(exam_updates)}")
    new_exam_patients = [patient_pk[row.patient_id] for row, _ in new_exams]
    created = bulkwrite.insert(Exam, ("patient", "exam_date", "created_at") + EXAM_FIELDS, [
        (patient, row.exam_date, now, *values.values()) for (row, values), patient in zip(new_exams,
                                                                                           new_exam_patients)])
    audit.created_many(Exam, ("patient", "exam_date") + EXAM_FIELDS, created,
                       [_exam_text(row) for row, _ in new_exams], new_exam_patients, (
                           {"patient": patient, "exam_date": row.exam_date, **values}
                           for (row, values), patient in zip(new_exams, new_exam_patients)))
    created_iter = iter(created)
    exam_pk = [pk if pk is not None else next(created_iter) for pk in exam_pk]
    bulkwrite.update(Exam, EXAM_FIELDS, exam_updates)
    audit.write()

    # QCT values, with the mean and category derived as QCTResult.derive does.
    new_results, result_updates = [], []
    for row, pk in zip(rows, exam_pk):
        qct_bmd, category = _derived(row.bmd, thresholds)
        values = {"bmd_l1": row.bmd["l1"], "bmd_l2": row.bmd["l2"], "bmd_l3": row.bmd["l3"],
                  "levels_note": row.levels_note, "qct_bmd": qct_bmd, "category": category}
        result = state.qct.get(pk)
        if result is None:
            new_results.append((row, pk, values))
            continue
        values["levels_note"] = row.levels_note or result.levels_note
        changes = {name: [getattr(result, name), value] for name, value in values.items()
                   if getattr(result, name) != value}
        if changes:
            for name, (_, value) in changes.items():
                setattr(result, name, value)
            audit.updated(result, changes)
            result_updates.append((result.pk, *(getattr(result, name) for name in QCT_FIELDS), now))
    report(0.6, f"storing {len(new_results)} new QCT result(s), updating {len(result_updates)}")
    created = bulkwrite.insert(QCTResult, ("exam", "updated_at") + QCT_FIELDS,
                               [(pk, now, *values.values()) for row, pk, values in new_results])
    # The text of QCTResult.__str__ (Python's rounding of the mean to 0.1, not the database's).
    audit.created_many(QCTResult, ("exam",) + QCT_FIELDS, created,
                       [f"QCT {_exam_text(row)}: {values['qct_bmd']:.1f} mg/cm3" for row, _, values in new_results],
                       [patient_pk[row.patient_id] for row, _, _ in new_results],
                       ({"exam": exam_id, **values} for row, exam_id, values in new_results))
    bulkwrite.update(QCTResult, QCT_FIELDS + ("updated_at",), result_updates)
    audit.write()

    # Splits in the project's main cohort (a change in a frozen cohort was refused before).
    split_rows = [(row, pk) for row, pk in zip(rows, exam_pk) if row.split]
    if split_rows:
        cohort = state.cohort or project.default_cohort()
        new_members, member_updates = [], []
        for row, pk in split_rows:
            member = state.members.get(pk)
            if member is None:
                new_members.append((row, pk))
            elif member.split != row.split:
                audit.updated(member, {"split": [member.split, row.split]})
                member_updates.append((member.pk, row.split))
        report(0.75, f"storing {len(new_members)} cohort split(s), updating {len(member_updates)}")
        created = bulkwrite.insert(CohortMember, ("cohort", "exam", "split"),
                                   [(cohort.pk, pk, row.split) for row, pk in new_members])
        audit.created_many(CohortMember, ("cohort", "exam", "split"), created,
                           [f"{_exam_text(row)} in {cohort.name} ({row.split})" for row, _ in new_members],
                           [patient_pk[row.patient_id] for row, _ in new_members],
                           ({"cohort": cohort.pk, "exam": exam_id, "split": row.split}
                            for row, exam_id in new_members))
        bulkwrite.update(CohortMember, ("split",), member_updates)
    audit.write()
    report(0.99, f"stored {len(rows)} row(s) with {audit.written} audit entries")


def _exam_text(row):
    """``str(exam)`` of the row's exam (``isoformat`` is its ``%Y-%m-%d`` for the years 1970 on that exam dates
    are checked to have, at a fifth of strftime's time)."""
    return f"{row.patient_id} {row.exam_date.isoformat()}"


def _derived(bmd, thresholds):
    """``(qct_bmd, category)`` of BMD values (mg/cm3) by level, as ``QCTResult.derive`` sets them."""
    measured = [value for value in bmd.values() if value is not None]
    qct_bmd = round(sum(measured) / len(measured), 3) if measured else None
    return qct_bmd, thresholds.categorize(qct_bmd) or ""


class _BulkAudit:
    """The audit entries django-auditlog writes on save, for bulk statements (which send no signals).

    Entries carry the same ``changes`` (``{field: [old, new]}`` as text), ``object_repr``, actor (with the
    snapshot of their name that ``studies.audit`` adds to every entry) and ``additional_data`` (project and
    patient ids, which the patient's history page reads) as a page edit's.
    """

    def __init__(self, project, actor):
        from auditlog.cid import get_cid
        from auditlog.models import LogEntry

        from .audit import actor_snapshot

        self.CREATE, self.UPDATE = LogEntry.Action.CREATE, LogEntry.Action.UPDATE
        self.project_id = project.pk
        known = actor is not None and getattr(actor, "is_authenticated", False)
        self.actor_id = actor.pk if known else None
        self.actor_email = getattr(actor, "email", None) if known else None
        self.extra = {"project_id": project.pk, **actor_snapshot(actor if known else None)}
        self.cid = get_cid()
        self.timestamp = timezone.now()
        self.entries = []
        self.written = 0
        self._content_types = {}

    def _content_type(self, model):
        if model not in self._content_types:
            self._content_types[model] = ContentType.objects.get_for_model(model).pk
        return self._content_types[model]

    def _entry(self, model, pk, text, action, changes, extra):
        self.entries.append((self._content_type(model), str(pk), pk, text, action, changes, "", self.actor_id,
                             self.actor_email, self.cid, self.timestamp, extra))

    def created_many(self, model, fields, pks, texts, patient_ids, values):
        """New rows: ``pks`` with their ``texts`` (``str`` of each) and patients' ids, lists in one order.

        Each entry lists the row's id and its non-empty ``fields``, each as ``["None", text]`` like
        django-auditlog's. On PostgreSQL the database builds the entries from the rows as stored
        (``bulkwrite.audit_created``); elsewhere they are built here from ``values``, an iterable of dicts
        by field name in the same order (read only then).
        """
        if connection.vendor == "postgresql":
            self.written += bulkwrite.audit_created(
                model, fields, pks, texts, patient_ids, content_type=self._content_type(model),
                action=self.CREATE, actor=self.actor_id, actor_email=self.actor_email, cid=self.cid,
                timestamp=self.timestamp, extra=self.extra)
            return
        for pk, text, patient_id, row_values in zip(pks, texts, patient_ids, values):
            changes = {"id": ["None", str(pk)]}
            for name in fields:
                value = row_values[name]
                if value is not None and value != "":
                    changes[name] = ["None", str(value)]
            self._entry(model, pk, text, self.CREATE, changes, {**self.extra, "patient_id": patient_id})

    def write(self):
        """Store the entries collected so far (after each step, so they never pile up for the whole file)."""
        bulkwrite.audit_rows(self.entries)
        self.written += len(self.entries)
        self.entries = []

    def updated(self, obj, changes):
        """A stored instance (as changed) and ``{field: [old, new]}``."""
        text = {name: [smart_str(old), smart_str(new)] for name, (old, new) in changes.items()}
        self._entry(type(obj), obj.pk, smart_str(obj), self.UPDATE, text, {**obj.get_additional_data(),
                                                                           **self.extra})


def import_qct_file(path, project_name, *, progress=None):
    """Import a CSV file into the named project (created if missing). Raises CSVImportError listing rows."""
    with open(path, "rb") as handle:
        data = handle.read()
    with transaction.atomic():
        project, _ = Project.objects.get_or_create(name=project_name)
        return import_qct(project, data, source=str(path), progress=progress)


# Files confirmed on the import page wait in the file storage (not in the session: 200,000 rows are
# megabytes) until the import, inline or as a job, has stored them.
PENDING_FOLDER = "imports/pending"
# Up to this many rows the confirmed import runs in the request (a second or two); more runs as a job.
INLINE_MAX_ROWS = 5000


def save_pending(project, data):
    """Keep an uploaded file (bytes) for its confirmed import; returns its storage name."""
    import uuid

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    return default_storage.save(f"{PENDING_FOLDER}/{project.pk}-{uuid.uuid4().hex}.csv", ContentFile(data))


# Kept files that no job refers to are removed after this long (a preview never confirmed, say).
PENDING_KEPT_FOR = dt.timedelta(days=1)


def _pending_name(name):
    if not name.startswith(PENDING_FOLDER + "/") or ".." in name or "/" in name[len(PENDING_FOLDER) + 1:]:
        raise CSVImportError([f"{name}: not a pending import file"])
    return name


def read_pending(name):
    from django.core.files.storage import default_storage

    try:
        with default_storage.open(_pending_name(name), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CSVImportError(["the uploaded file is no longer available; upload it again"]) from None


def discard_pending(name):
    """Delete a kept file (gone already is fine)."""
    from django.core.files.storage import default_storage

    default_storage.delete(_pending_name(name))


def remove_stale_pending(older_than=PENDING_KEPT_FOR):
    """Delete kept files older than ``older_than`` that no queued or running import job refers to.
    Returns their names."""
    from django.core.files.storage import default_storage

    from .models import Job, JobState

    try:
        _, files = default_storage.listdir(PENDING_FOLDER)
    except FileNotFoundError:
        return []
    cutoff = timezone.now() - older_than
    stale = []
    for file in files:
        name = f"{PENDING_FOLDER}/{file}"
        try:
            if default_storage.get_modified_time(name) < cutoff:
                stale.append(name)
        except FileNotFoundError:  # removed meanwhile
            continue
    if not stale:
        return []
    in_use = set(Job.objects.filter(kind="registry.import_qct", state__in=(JobState.QUEUED, JobState.RUNNING))
                 .values_list("params__pending", flat=True))
    removed = [name for name in stale if name not in in_use]
    for name in removed:
        default_storage.delete(name)
    return removed


def import_pending(project, name, *, source, expected, actor=None, progress=None):
    """Import a file kept by ``save_pending`` (as confirmed with ``expected`` counts); the file is deleted
    afterwards, imported or not (nothing was stored then; the user uploads the file again)."""
    try:
        return import_qct(project, read_pending(name), source=source, actor=actor, progress=progress,
                          expected=expected)
    finally:
        discard_pending(name)


def submit_import_job(project, user, name, *, source, expected):
    """Start the import of a pending file as a background job (enqueued once the transaction commits)."""
    from . import jobs

    return jobs.submit("registry.import_qct", project=project, user=user, project_id=project.pk,
                       pending=name, source=source, expected=expected,
                       user_id=user.pk if user is not None else None)

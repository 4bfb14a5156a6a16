"""CSV export of a project's registry: one row per patient exam (SPEC section 6)."""

import csv

from .registry import exam_rows
from .validation import FORMULA_PREFIXES

COLUMNS = (
    "patient_id",
    "sex",
    "age",
    "exam_date",
    "region",
    "bmd_l1",
    "bmd_l2",
    "bmd_l3",
    "qct_bmd",
    "category",
    "split",
    "excluded",
    "study_uid",
    "contrast",
)


def neutralise(value):
    """Make a cell that a spreadsheet would run as a formula inert by prefixing an apostrophe."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _number(value):
    return "" if value is None else f"{value:g}"


def cohort_rows(project, **filters):
    for exam in exam_rows(project, **filters).iterator(chunk_size=2000):
        qct = getattr(exam, "qct", None)
        yield {
            "patient_id": exam.patient.pseudonym,
            "sex": exam.patient.sex,
            "age": "" if exam.age_at_exam is None else exam.age_at_exam,
            "exam_date": exam.exam_date.isoformat(),
            "region": exam.region,
            "bmd_l1": _number(qct.bmd_l1) if qct else "",
            "bmd_l2": _number(qct.bmd_l2) if qct else "",
            "bmd_l3": _number(qct.bmd_l3) if qct else "",
            "qct_bmd": _number(qct.qct_bmd) if qct else "",
            "category": qct.category if qct else "",
            "split": exam.split or "",
            "excluded": "yes" if exam.excluded else "no",
            "study_uid": exam.study_uid,
            "contrast": "yes" if exam.contrast else "no",
        }


def write_cohort_csv(project, handle, **filters):
    """Write the export to an open text handle; returns the number of rows."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in cohort_rows(project, **filters):
        writer.writerow([neutralise(row[column]) for column in COLUMNS])
        count += 1
    return count

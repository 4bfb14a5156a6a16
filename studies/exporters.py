"""CSV export of a project's registry: one row per patient exam (SPEC section 6).

The columns are the import's (``studies.importers``), under the same names, plus three the registry derives
(``qct_bmd``, ``category``, ``excluded``), which the import accepts and ignores: an exported file imports
into another project unchanged, and exporting that project gives the same rows again.
"""

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
    "series_uid",
    "scanner_model",
    "kvp",
    "slice_thickness_mm",
    "birth_year",
    "levels_note",
)


def neutralise(value):
    """Make a cell that a spreadsheet would run as a formula inert by prefixing an apostrophe."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _number(value):
    """The shortest text that reads back as the same float ("95.5", "75", "0.625"); empty for None."""
    if value is None:
        return ""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def cohort_rows(project, **filters):
    """One dict per patient exam of ``project`` (``filters`` as ``registry.exam_rows`` takes them)."""
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
            "series_uid": exam.series_uid,
            "scanner_model": exam.scanner_model,
            "kvp": _number(exam.kvp),
            "slice_thickness_mm": _number(exam.slice_thickness_mm),
            "birth_year": "" if exam.patient.birth_year is None else exam.patient.birth_year,
            "levels_note": qct.levels_note if qct else "",
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

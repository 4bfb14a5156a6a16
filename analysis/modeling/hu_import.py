"""Import of per-vertebra mean HU measured elsewhere (e.g. TotalSegmentator), stored as measurement runs.

CSV, header on line 1, one row per exam and level. Columns: ``patient_id``, ``exam_date`` (YYYY-MM-DD),
``level`` (C1..L6, e.g. T12), ``mean_hu``; optional ``median_hu``, ``sd_hu``, ``roi_voxels``,
``body_volume_ml``. Each exam in the file becomes one new ``MeasurementRun`` of the named source with one
``LevelMeasurement`` per row, so models can be trained on them exactly like on the pipeline's own runs.

Every problem is reported as ``line N: reason`` (physical lines, header = line 1); nothing is stored unless
the whole file is valid (one transaction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.db import transaction

from analysis.models import LevelMeasurement, MeasurementRun
from analysis.segmentation.levels import LEVEL_NAMES
from studies.models import Exam, Project
from studies.csvfiles import CSVFileError, line_order, read_rows
from studies.validation import parse_date, row_patient_id

__all__ = ["HU_MAX", "HU_MIN", "HUImportError", "import_hu_csv", "parse_hu_csv"]

REQUIRED = ("patient_id", "exam_date", "level", "mean_hu")
OPTIONAL = ("median_hu", "sd_hu", "roi_voxels", "body_volume_ml")
# The range of 12-bit CT values after rescaling: anything outside is not a HU value.
HU_MIN, HU_MAX = -1024.0, 3071.0
MAX_ROWS = 500_000


class HUImportError(CSVFileError):
    """The file cannot be imported; ``errors`` lists ``line N: reason`` strings."""


@dataclass
class HURow:
    line: int
    patient_id: str
    exam_date: object
    level: str
    mean_hu: float
    median_hu: float | None = None
    sd_hu: float | None = None
    roi_voxels: int | None = None
    body_volume_ml: float | None = None


@dataclass
class HUPlan:
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    exams: dict = field(default_factory=dict)  # (patient_id, exam_date) -> Exam


def _number(text, name, *, required=False, low=None, high=None, integer=False):
    text = text.strip()
    if not text:
        if required:
            raise ValueError(f"{name} is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} {text!r} is not a finite number")
    if integer and value != int(value):
        raise ValueError(f"{name} {text!r} must be a whole number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} {value:g} is outside {low:g}..{high:g}")
    return int(value) if integer else value


def _parse_row(line, cells):
    patient_id = row_patient_id(cells)
    level = cells["level"].strip().upper()
    if level not in LEVEL_NAMES:
        raise ValueError(f"unknown level {cells['level'].strip()!r}; use C1-C7, T1-T12, L1-L6")
    return HURow(
        line=line,
        patient_id=patient_id,
        exam_date=parse_date(cells["exam_date"]),
        level=level,
        mean_hu=_number(cells["mean_hu"], "mean_hu", required=True, low=HU_MIN, high=HU_MAX),
        median_hu=_number(cells.get("median_hu", ""), "median_hu", low=HU_MIN, high=HU_MAX),
        sd_hu=_number(cells.get("sd_hu", ""), "sd_hu", low=0.0, high=HU_MAX - HU_MIN),
        roi_voxels=_number(cells.get("roi_voxels", ""), "roi_voxels", low=0, high=1e9, integer=True),
        body_volume_ml=_number(cells.get("body_volume_ml", ""), "body_volume_ml", low=0.0, high=1000.0),
    )


def parse_hu_csv(data, project, source="upload"):
    """Check an HU CSV (bytes or text) against the project's registry.

    Returns
    -------
    HUPlan
        ``plan.errors`` lists ``line N: reason``; ``plan.exams`` maps (patient id, exam date) to the exam.
    """
    table = read_rows(data, source=source, required=REQUIRED, optional=OPTIONAL, error=HUImportError,
                      max_rows=MAX_ROWS)
    plan = HUPlan(errors=table.errors)
    seen = {}
    for line, cells in table.rows:
        try:
            row = _parse_row(line, cells)
        except ValueError as exc:
            plan.errors.append(f"line {line}: {exc}")
            continue
        key = (row.patient_id, row.exam_date, row.level)
        if key in seen:
            plan.errors.append(f"line {line}: duplicate of line {seen[key]} (patient {row.patient_id}, exam "
                               f"{row.exam_date}, level {row.level})")
            continue
        seen[key] = line
        plan.rows.append(row)

    pseudonyms = {row.patient_id for row in plan.rows}
    exams = {
        (e.patient.pseudonym, e.exam_date): e
        for e in Exam.objects.filter(patient__project=project, patient__pseudonym__in=pseudonyms).select_related("patient")
    }
    known_patients = {pseudonym for pseudonym, _ in exams}
    for row in plan.rows:
        exam = exams.get((row.patient_id, row.exam_date))
        if exam is None:
            if row.patient_id not in known_patients:
                plan.errors.append(f"line {row.line}: unknown patient {row.patient_id!r} in project {project.name!r}")
            else:
                plan.errors.append(f"line {row.line}: patient {row.patient_id} has no exam on {row.exam_date}")
            continue
        plan.exams[(row.patient_id, row.exam_date)] = exam
    plan.errors.sort(key=line_order)
    return plan


def import_hu_csv(data, project, *, source, user=None, segmenter_version="", parameters=None, file_name="upload"):
    """Check and store an HU CSV: one new measurement run per exam, all or nothing.

    Parameters
    ----------
    data : bytes or str
    project : Project
    source : str
        The tool that measured the values (e.g. "TotalSegmentator"); not "bmdsite", which names the
        product's own pipeline.
    user : User, optional
    segmenter_version : str
    parameters : dict, optional
        Recorded with each run (e.g. {"erosion_mm": 3}).

    Returns
    -------
    list of MeasurementRun

    Raises
    ------
    HUImportError
        Listing every bad line; nothing is stored.
    """
    source = (source or "").strip()
    if not source:
        raise HUImportError(["--source is empty: name the tool that measured the values"])
    if source == MeasurementRun.PIPELINE:
        raise HUImportError([f"source {source!r} is reserved for the product's own pipeline; name the tool"])
    if len(source) > 60:
        raise HUImportError(["source name is longer than 60 characters"])
    plan = parse_hu_csv(data, project, source=file_name)
    if plan.errors:
        raise HUImportError(plan.errors)
    by_exam = {}
    for row in plan.rows:
        by_exam.setdefault((row.patient_id, row.exam_date), []).append(row)
    runs = []
    with transaction.atomic():
        levels = []
        for key, rows in by_exam.items():
            run = MeasurementRun.objects.create(
                exam=plan.exams[key], source=source, segmenter_version=segmenter_version,
                parameters=dict(parameters or {}, imported_from=file_name), created_by=user,
            )
            runs.append(run)
            levels += [
                LevelMeasurement(run=run, level=r.level, mean_hu=r.mean_hu, median_hu=r.median_hu, sd_hu=r.sd_hu,
                                 roi_voxels=r.roi_voxels, body_volume_ml=r.body_volume_ml)
                for r in rows
            ]
        LevelMeasurement.objects.bulk_create(levels, batch_size=2000)
    return runs


def import_hu_file(path, project_name, *, source, user=None):
    """Import a CSV file into an existing project; raises HUImportError listing rows."""
    try:
        project = Project.objects.get(name=project_name)
    except Project.DoesNotExist:
        raise HUImportError([f"no project named {project_name!r}"]) from None
    with open(path, "rb") as handle:
        data = handle.read()
    return import_hu_csv(data, project, source=source, user=user, file_name=str(path))

"""Measurements for the demo project, so the demo site can train models without any CT.

``studies.demo.seed_demo_project(n_patients, random_state)`` stores the registry side of
:func:`analysis.modeling.synthetic.generate_cohort`; :func:`seed_demo_measurements` stores the same cohort's
per-level HU as measurement runs of source ``"synthetic"``. The generator is deterministic, so generating it
again with the same seed and size gives the same patients, matched by pseudonym (``DEMO-0001`` ...).
"""

from __future__ import annotations

from analysis.modeling.features import ExamRecord

__all__ = ["SYNTHETIC_SOURCE", "seed_demo_measurements", "synthetic_records"]

SYNTHETIC_SOURCE = "synthetic"


def synthetic_records(cohort, thresholds=None):
    """Model records straight from a synthetic cohort (no database): for tests and benchmarks.

    Parameters
    ----------
    cohort : sequence of SyntheticExam
    thresholds : analysis.categories.Thresholds, optional
        Category thresholds (default 80/120 mg/cm3).

    Returns
    -------
    list of ExamRecord
        ``exam_id`` and ``run_id`` are the 1-based position in the cohort.
    """
    from analysis.categories import DEFAULT_THRESHOLDS

    thresholds = thresholds or DEFAULT_THRESHOLDS
    records = []
    for i, exam in enumerate(cohort, start=1):
        records.append(
            ExamRecord(
                exam_id=i,
                patient_id=exam.patient_id,
                sex=exam.sex,
                age=exam.age,
                split=exam.split,
                qct_bmd=exam.qct_bmd,
                category=thresholds.categorize(exam.qct_bmd),
                run_id=i,
                hu=dict(exam.hu_by_level),
                exam_date=exam.exam_date,
            )
        )
    return records


def seed_demo_measurements(project, random_state=0, n_patients=None):
    """Store one ``"synthetic"`` measurement run per demo exam (idempotent).

    Parameters
    ----------
    project : studies.models.Project
        Created by ``studies.demo.seed_demo_project(n_patients, random_state)``.
    random_state : int
        The seed given to ``seed_demo_project``.
    n_patients : int, optional
        The cohort size given to ``seed_demo_project``; default the project's number of patients.

    Returns
    -------
    int
        Runs created (0 when every demo exam already has one).
    """
    from django.db import transaction

    from analysis.modeling.synthetic import generate_cohort
    from analysis.models import LevelMeasurement, MeasurementRun
    from studies.models import Exam

    n = project.patients.count() if n_patients is None else int(n_patients)
    if n == 0:
        return 0
    cohort = {c.patient_id: c for c in generate_cohort(n_patients=n, random_state=random_state)}
    exams = (
        Exam.objects.filter(patient__project=project)
        .exclude(measurement_runs__source=SYNTHETIC_SOURCE)
        .select_related("patient")
    )
    created = 0
    with transaction.atomic():
        levels = []
        for exam in exams:
            synthetic = cohort.get(exam.patient.pseudonym)
            if synthetic is None:
                continue
            if synthetic.exam_date != exam.exam_date or synthetic.sex != exam.patient.sex:
                raise ValueError(
                    f"patient {exam.patient.pseudonym} does not match the synthetic cohort of seed {random_state} "
                    f"and size {n} (exam date or sex differ); was the project seeded with other values?"
                )
            run = MeasurementRun.objects.create(
                exam=exam,
                source=SYNTHETIC_SOURCE,
                segmenter_version="synthetic cohort generator",
                parameters={"random_state": int(random_state), "n_patients": n},
            )
            levels += [LevelMeasurement(run=run, level=level, mean_hu=hu) for level, hu in synthetic.hu_by_level.items()]
            created += 1
        LevelMeasurement.objects.bulk_create(levels, batch_size=2000)
    return created

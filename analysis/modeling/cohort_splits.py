"""Writing the study's splits to a cohort (ORM glue over :func:`analysis.modeling.splits.study_split`).

Used by ``manage.py make_splits`` and the cohort splits page. A cohort that does not exist yet is created
with every exam of the project (a frozen cohort's splits never change: make a new cohort instead). Every split
change is saved through :func:`analysis.modeling.records.apply_splits`, so it is audited and refused on a
frozen cohort.
"""

from __future__ import annotations

from collections import Counter

from django.db import transaction

from analysis.modeling.records import CohortFrozenError, apply_splits
from analysis.modeling.splits import SPLITS, study_split
from studies.models import Cohort, CohortMember, Exam

__all__ = ["CohortFrozenError", "make_splits"]


def make_splits(project, cohort_name, *, test_from, validation_share=0.2, stratify=False, random_state=0):
    """Assign train / validation / test to every exam of a cohort as the study did.

    Parameters
    ----------
    project : Project
    cohort_name : str
        Created (with every exam of the project) when missing.
    test_from : datetime.date
        Exams on or after it are the test split.
    validation_share : float
    stratify : bool
    random_state : int

    Returns
    -------
    (Cohort, dict)
        The cohort and the count per split.

    Raises
    ------
    CohortFrozenError
        The cohort is frozen (a model was trained on its splits).
    ValueError
        Bad share, or a split that would be empty.
    """
    with transaction.atomic():
        cohort, created = Cohort.objects.get_or_create(
            project=project, name=cohort_name,
            defaults={"description": f"Exams from {test_from:%Y-%m-%d} on: test; the rest random "
                                     f"{round(100 * (1 - validation_share))}/{round(100 * validation_share)} "
                                     f"train/validation{' (stratified)' if stratify else ''}, seed {random_state}."},
        )
        if cohort.frozen:
            raise CohortFrozenError(f"cohort {cohort.name!r} is frozen: a model was trained on its splits; "
                                    f"make a new cohort instead")
        if created:
            exams = Exam.objects.filter(patient__project=project).values_list("pk", flat=True)
            CohortMember.objects.bulk_create([CohortMember(cohort=cohort, exam_id=pk) for pk in exams])
        rows = list(
            CohortMember.objects.filter(cohort=cohort).order_by("exam_id")
            .values_list("exam_id", "exam__exam_date", "exam__qct__category")
        )
        if not rows:
            raise ValueError(f"cohort {cohort.name!r} has no exams")
        splits = study_split([r[1] for r in rows], [r[2] or None for r in rows], test_from=test_from,
                             validation_share=validation_share, stratify=stratify, random_state=random_state)
        apply_splits(cohort, {r[0]: str(s) for r, s in zip(rows, splits)})
    counts = Counter(str(s) for s in splits)
    return cohort, {split: counts.get(split, 0) for split in SPLITS}

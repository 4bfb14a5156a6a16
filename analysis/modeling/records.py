"""The registry side of modelling (ORM glue): exam records for the feature tables, the measurement run chosen
per exam, and cohort splits.

Everything above this module (features, splits, training) works on plain ``ExamRecord`` objects.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction

from analysis.modeling.features import ExamRecord
from analysis.models import LevelMeasurement, MeasurementRun
from studies.models import Cohort, CohortMember, Exam, ExclusionFlag

__all__ = [
    "PROJECT_DEFAULT_SOURCE",
    "CohortFrozenError",
    "apply_splits",
    "assign_splits",
    "chosen_runs",
    "exam_records",
    "freeze_cohort",
    "records_for_exams",
    "resolve_source",
    "reviewed_run_ids",
    "source_choices",
]

# The measurement source that means "per exam, the newest reviewed run if any, else the newest automatic run"
# (of whatever tool). Recorded as such in model versions; their data snapshots name the exact runs.
PROJECT_DEFAULT_SOURCE = "default"
PROJECT_DEFAULT_LABEL = "project default: per exam the newest reviewed run, else the newest automatic run"


class CohortFrozenError(ValueError):
    """The cohort's splits were used to train a model and can no longer change."""


def resolve_source(exams, source=None):
    """The measurement source to use for ``exams``.

    Parameters
    ----------
    exams : QuerySet of Exam
    source : str, optional
        A source name (only that tool's runs are used), or None / "" / ``PROJECT_DEFAULT_SOURCE`` for the
        project default: per exam the newest reviewed run if any, else the newest automatic run.

    Returns
    -------
    str
        The source name, or ``PROJECT_DEFAULT_SOURCE``.

    Raises
    ------
    ValueError
        When the exams have no runs (of that source).
    """
    sources = sorted(set(MeasurementRun.objects.filter(exam__in=exams).values_list("source", flat=True)))
    if source in (None, "", PROJECT_DEFAULT_SOURCE):
        if not sources:
            raise ValueError("these exams have no measurement runs; measure them or import HU values first")
        return PROJECT_DEFAULT_SOURCE
    if source not in sources:
        raise ValueError(
            f"no measurement runs of source {source!r} for these exams (sources present: "
            f"{', '.join(sources) or 'none'})"
        )
    return source


def source_choices(exams):
    """``[(source, number of exams with a run of it), ...]`` for a form's choice of measurement source."""
    from django.db.models import Count

    rows = (MeasurementRun.objects.filter(exam__in=exams).values("source")
            .annotate(n=Count("exam", distinct=True)).order_by("source"))
    return [(row["source"], row["n"]) for row in rows]


def reviewed_run_ids(exams):
    """Ids of the runs of ``exams`` accepted in review: per exam whose review case is accepted now, the run it
    accepted (the relabelled run made on acceptance, else the run under review as it was).

    Only the case's state counts, not the ``"reviewed"`` mark a relabel or a mask edit leaves in its run's
    ``parameters`` (that records who made the run): a case sent back to re-segmentation or rejected after
    all no longer makes its runs reviewed. The same definition as the reviewed cases a network trains on
    (``ReviewCase.objects.reviewed``). Everything that chooses runs asks this function.
    """
    from studies.review.models import ReviewCase

    return set(ReviewCase.objects.filter(exam__in=exams).reviewed_run_ids())


def chosen_runs(exams, source):
    """The measurement run used per exam.

    Parameters
    ----------
    exams : QuerySet of Exam
    source : str
        A source name: the exam's newest run of that source. ``PROJECT_DEFAULT_SOURCE``: the exam's newest
        reviewed run if it has one, else its newest run of any source ("automatic": the pipeline's or an
        imported tool's, unreviewed).

    Returns
    -------
    dict
        ``{exam_id: run_id}`` for the exams that have such a run.
    """
    runs = MeasurementRun.objects.filter(exam__in=exams)
    if source != PROJECT_DEFAULT_SOURCE:
        runs = runs.filter(source=source)
    runs = runs.order_by("exam_id", "-created_at", "-pk").values_list("exam_id", "pk")
    chosen = {}
    for exam_id, run_id in runs.iterator(chunk_size=5000):
        chosen.setdefault(exam_id, run_id)
    if source == PROJECT_DEFAULT_SOURCE:
        newest_reviewed = {}
        reviewed = reviewed_run_ids(exams)
        if reviewed:
            for exam_id, run_id in (MeasurementRun.objects.filter(pk__in=reviewed)
                                    .order_by("exam_id", "-created_at", "-pk").values_list("exam_id", "pk")):
                newest_reviewed.setdefault(exam_id, run_id)
        chosen.update(newest_reviewed)
    return chosen


def _levels_of(run_ids):
    hu = defaultdict(dict)
    flags = defaultdict(dict)
    rows = LevelMeasurement.objects.filter(run_id__in=run_ids).values_list("run_id", "level", "mean_hu", "flags")
    for run_id, level, mean_hu, level_flags in rows.iterator(chunk_size=5000):
        hu[run_id][level] = mean_hu
        if level_flags:
            flags[run_id][level] = tuple(level_flags)
    return hu, flags


def records_for_exams(exams, source, splits=None):
    """``ExamRecord`` per exam, with the HU of the chosen run of ``source``.

    Parameters
    ----------
    exams : QuerySet of Exam
    source : str
    splits : dict, optional
        ``{exam_id: split}``; exams not in it get "".

    Returns
    -------
    list of ExamRecord
        In the order of ``exams``.
    """
    splits = splits or {}
    runs = chosen_runs(exams, source)
    # Levels are fetched in chunks: an IN list of a whole cohort's run ids would exceed SQLite's limits.
    run_ids = list(runs.values())
    hu, flags = {}, {}
    for start in range(0, len(run_ids), 5000):
        chunk_hu, chunk_flags = _levels_of(run_ids[start : start + 5000])
        hu.update(chunk_hu)
        flags.update(chunk_flags)
    exclusions = defaultdict(list)
    patient_exclusions = defaultdict(list)
    patient_ids = exams.values("patient_id")
    for patient_id, exam_id, reason in ExclusionFlag.objects.filter(patient_id__in=patient_ids).values_list(
        "patient_id", "exam_id", "reason"
    ):
        (exclusions[exam_id] if exam_id else patient_exclusions[patient_id]).append(reason)
    rows = exams.values_list(
        "pk", "patient_id", "patient__pseudonym", "patient__sex", "age_at_exam", "exam_date", "qct__qct_bmd",
        "qct__category",
    )
    records = []
    for exam_id, patient_pk, pseudonym, sex, age, exam_date, bmd, category in rows.iterator(chunk_size=5000):
        run_id = runs.get(exam_id)
        records.append(
            ExamRecord(
                exam_id=exam_id,
                patient_id=pseudonym,
                sex=sex or None,
                age=age,
                split=splits.get(exam_id, ""),
                qct_bmd=bmd,
                category=category or None,
                exclusions=tuple(sorted(set(patient_exclusions[patient_pk] + exclusions[exam_id]))),
                run_id=run_id,
                hu=hu.get(run_id, {}),
                level_flags=flags.get(run_id, {}),
                exam_date=exam_date,
            )
        )
    return records


def exam_records(cohort, source=None):
    """Records of every member of ``cohort`` with its split; returns ``(records, source)``."""
    exams = Exam.objects.filter(cohort_memberships__cohort=cohort).order_by("pk")
    source = resolve_source(exams, source)
    splits = dict(CohortMember.objects.filter(cohort=cohort).values_list("exam_id", "split"))
    return records_for_exams(exams, source, splits), source


def _check_not_frozen(cohort):
    cohort.refresh_from_db(fields=["frozen"])
    if cohort.frozen:
        raise CohortFrozenError(f"cohort {cohort.name!r} is frozen: a model was trained on its splits")


def apply_splits(cohort, splits):
    """Set the split of cohort members (imported or computed splits).

    Parameters
    ----------
    cohort : Cohort
    splits : dict
        ``{exam_id: "train" | "validation" | "test" | ""}``; exams not yet members are added.

    Returns
    -------
    int
        Memberships created or changed.
    """
    allowed = {"train", "validation", "test", ""}
    bad = sorted({s for s in splits.values() if s not in allowed})
    if bad:
        raise ValueError(f"unknown split value(s) {bad}; use train, validation, test or empty")
    with transaction.atomic():
        _check_not_frozen(cohort)
        members = {m.exam_id: m for m in CohortMember.objects.select_for_update().filter(cohort=cohort)}
        changed, created = [], []
        for exam_id, split in splits.items():
            member = members.get(exam_id)
            if member is None:
                created.append(CohortMember(cohort=cohort, exam_id=exam_id, split=split))
            elif member.split != split:
                member.split = split
                changed.append(member)
        # Saved one by one so the audit log records every split change (bulk updates bypass it).
        for member in changed:
            member.save(update_fields=["split"])
        CohortMember.objects.bulk_create(created)
    return len(changed) + len(created)


def assign_splits(cohort, *, test_from=None, validation_fraction=0.2, random_state=0):
    """Temporal cut-off plus seeded stratified train/validation split of the cohort's members.

    Members without a QCT category before the cut-off are left unassigned. Excluded exams get a split like
    the others (they stay in the registry and are left out of the feature tables with their reason).
    Refused (``CohortFrozenError``) once the cohort is frozen.

    Returns
    -------
    dict
        Counts per split.
    """
    from analysis.modeling.splits import temporal_random_split

    _check_not_frozen(cohort)
    rows = list(
        CohortMember.objects.filter(cohort=cohort)
        .order_by("exam_id")
        .values_list("exam_id", "exam__exam_date", "exam__qct__category")
    )
    splits = temporal_random_split(
        [r[1] for r in rows],
        [r[2] or None for r in rows],
        test_from=test_from,
        validation_fraction=validation_fraction,
        random_state=random_state,
    )
    apply_splits(cohort, {r[0]: str(s) for r, s in zip(rows, splits)})
    counts = defaultdict(int)
    for s in splits:
        counts[str(s) or "unassigned"] += 1
    return dict(counts)


def freeze_cohort(cohort):
    """Mark the cohort frozen (a conditional update, so concurrent trainings agree). Returns True if it changed."""
    changed = Cohort.objects.filter(pk=cohort.pk, frozen=False).update(frozen=True)
    cohort.frozen = True
    return bool(changed)

"""Registry queries and changes that pages, commands and jobs share."""

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery

from .models import AccessLog, Cohort, CohortMember, EditConflict, Exam, ExclusionFlag, Project, QCTResult


def exam_rows(project, *, search="", category="", split="", excluded="", region=""):
    """One row per patient exam of ``project`` with its QCT values, default-cohort split and exclusion state.

    Everything the registry list shows comes from one query (plus the paginator's count), whatever the
    page size: the patient and QCT values by join, split and exclusion by correlated subqueries.
    """
    split_of = CohortMember.objects.filter(
        exam=OuterRef("pk"), cohort__project=project, cohort__name=Cohort.DEFAULT_NAME
    ).values("split")[:1]
    is_excluded = ExclusionFlag.objects.filter(Q(exam=OuterRef("pk")) | Q(patient=OuterRef("patient"), exam=None))
    rows = (
        Exam.objects.filter(patient__project=project)
        .select_related("patient", "qct")
        .annotate(split=Subquery(split_of), excluded=Exists(is_excluded))
        .order_by("patient__pseudonym", "exam_date", "pk")
    )
    if search:
        rows = rows.filter(Q(patient__pseudonym__istartswith=search) | Q(study_uid=search))
    if category:
        rows = rows.filter(qct__category=category)
    if split == "none":
        rows = rows.filter(split__isnull=True)
    elif split:
        # A join on the membership filters 100,000 rows far faster than comparing the annotated subquery.
        rows = rows.filter(cohort_memberships__cohort__project=project,
                           cohort_memberships__cohort__name=Cohort.DEFAULT_NAME, cohort_memberships__split=split)
    if excluded in ("yes", "no"):
        rows = rows.filter(excluded=(excluded == "yes"))
    if region:
        rows = rows.filter(region=region)
    return rows


class FrozenSplitError(ValueError):
    """A split change in a cohort whose splits a model was trained on (the cohort is frozen).

    Only the split of an exam is fixed by the freeze: QCT values, ages, flags and other corrections stay
    possible and mark the dependent model versions stale instead.
    """

    MESSAGE = "split of a frozen cohort cannot change"

    def __init__(self, cohort, exam_id, old, new):
        self.cohort, self.exam_id, self.old, self.new = cohort, exam_id, old, new
        super().__init__(f"{self.MESSAGE} (cohort {cohort.name!r}, a model was trained on its splits: "
                         f"{old or 'not a member'} -> {new or 'unassigned'})")


def frozen_split_changes(project, wanted, cohort=None):
    """Which of the wanted split assignments a frozen cohort refuses (for import previews: one query).

    Parameters
    ----------
    project : Project
    wanted : dict
        ``{(patient pseudonym, exam_date): split}``; exams that do not exist yet count as not members.
    cohort : Cohort, optional
        Default the project's main cohort.

    Returns
    -------
    dict
        ``{(pseudonym, exam_date): stored split or None}`` for every key whose split would change in a frozen
        cohort; empty when the cohort is not frozen. A CSV importer reports these rows as
        ``line N: split of a frozen cohort cannot change``.
    """
    cohort = cohort or Cohort.objects.filter(project=project, name=Cohort.DEFAULT_NAME).first()
    if cohort is None or not Cohort.objects.filter(pk=cohort.pk, frozen=True).exists():
        return {}
    stored = {
        (pseudonym, exam_date): split
        for pseudonym, exam_date, split in CohortMember.objects.filter(cohort=cohort).values_list(
            "exam__patient__pseudonym", "exam__exam_date", "split")
    }
    refused = {}
    for key, split in wanted.items():
        current = stored.get(key)
        if _split_changes(current, split or ""):
            refused[key] = current
    return refused


def _split_changes(current, new):
    """Whether setting ``new`` changes a membership whose split is ``current`` (None: not a member)."""
    if current is None:
        return new != ""
    return current != new


def set_split(exam, split, cohort=None, *, expected_version=None):
    """Put ``exam`` in ``cohort`` (the project's main cohort if None) with ``split``.

    Parameters
    ----------
    exam : Exam
    split : str
        "train", "validation", "test" or "" (unassigned). An exam that is not a member and gets "" stays out.
    cohort : Cohort, optional
    expected_version : int, optional
        The membership's version the caller read (0: it was not a member); a different stored version raises
        ``EditConflict`` instead of overwriting someone else's split.

    Returns
    -------
    CohortMember or None

    Raises
    ------
    FrozenSplitError
        When the split would change in a frozen cohort (saving the same split is fine).
    EditConflict
    """
    cohort = cohort or exam.patient.project.default_cohort()
    with transaction.atomic():
        member = CohortMember.objects.select_for_update().filter(cohort=cohort, exam=exam).first()
        if expected_version is not None:
            stored_version = member.version if member else 0
            if stored_version != expected_version:
                raise EditConflict(CohortMember, member.pk if member else None, expected_version,
                                   stored_version if member else None)
        current = member.split if member else None
        if not _split_changes(current, split):
            return member
        if Cohort.objects.filter(pk=cohort.pk, frozen=True).exists():
            raise FrozenSplitError(cohort, exam.pk, current, split)
        if member is None:
            return CohortMember.objects.create(cohort=cohort, exam=exam, split=split)
        member.split = split
        member.save()
        return member


def recategorize_project(project, progress=None, *, actor=None, job_id=None, chunk_size=1000):
    """Recompute ``qct_bmd`` and ``category`` of every QCT result after the thresholds changed.

    The job owns only the derived columns. It reads the rows in primary-key chunks (no long transaction, no
    stale cursor) and writes each changed row with a conditional update on the version and values it read, so
    a QCT value saved while it runs is never written back: such a row is read again and recomputed from its
    current values. A row deleted meanwhile is skipped. Every change is audited, naming ``actor`` (the user
    who changed the thresholds) or, without one, the job.

    Parameters
    ----------
    project : Project
    progress : callable, optional
        ``progress(fraction, message)``, called after every chunk.
    actor : User, optional
    job_id : int, optional
        The job's id, written into the audit entries.
    chunk_size : int

    Returns
    -------
    int
        Rows whose category changed.
    """
    from django.contrib.contenttypes.models import ContentType

    rows = QCTResult.objects.filter(exam__patient__project=project)
    total = rows.count()
    content_type = ContentType.objects.get_for_model(QCTResult)
    via = f"recategorize job #{job_id}" if job_id else "recategorize job"
    fields = ("pk", "version", "bmd_l1", "bmd_l2", "bmd_l3", "qct_bmd", "category", "exam__patient_id",
              "exam__patient__pseudonym", "exam__exam_date")
    changed = done = 0
    last_pk = 0
    while True:
        chunk = list(rows.filter(pk__gt=last_pk).order_by("pk").values(*fields)[:chunk_size])
        if not chunk:
            break
        last_pk = chunk[-1]["pk"]
        # Thresholds are read per chunk, so a second threshold change while the job runs wins from there on
        # (and starts its own job for the rows already done).
        thresholds = Project.objects.only("osteoporosis_below", "normal_above").get(pk=project.pk).thresholds
        for row in chunk:
            changed += _recategorize_row(row, project.pk, thresholds, content_type, actor, via)
        done += len(chunk)
        if progress:
            progress(done / total if total else 1.0, f"{done} of {total}")
    return changed


def _recategorize_row(row, project_id, thresholds, content_type, actor, via, attempts=5):
    """Update one row's derived columns from its current values; returns 1 if its category changed."""
    from auditlog.models import LogEntry

    for _ in range(attempts):
        probe = QCTResult(bmd_l1=row["bmd_l1"], bmd_l2=row["bmd_l2"], bmd_l3=row["bmd_l3"])
        probe.derive(thresholds)
        if probe.qct_bmd == row["qct_bmd"] and probe.category == row["category"]:
            return 0
        with transaction.atomic():
            # Conditional on the version read: a row saved since then is not overwritten but read again.
            updated = QCTResult.objects.filter(pk=row["pk"], version=row["version"]).update(
                qct_bmd=probe.qct_bmd, category=probe.category)
            if updated:
                changes = {}
                if probe.category != row["category"]:
                    changes["category"] = [row["category"] or "", probe.category]
                if probe.qct_bmd != row["qct_bmd"]:
                    changes["qct_bmd"] = [str(row["qct_bmd"]), str(probe.qct_bmd)]
                LogEntry.objects.create(
                    content_type=content_type, object_pk=str(row["pk"]), object_id=row["pk"],
                    object_repr=f"QCT {row['exam__patient__pseudonym']} {row['exam__exam_date']:%Y-%m-%d}",
                    action=LogEntry.Action.UPDATE, changes=changes, actor=actor,
                    additional_data={"project_id": project_id, "patient_id": row["exam__patient_id"],
                                     "via": via},
                )
                return int(probe.category != row["category"])
        # Someone saved (or deleted) the row since it was read: read it again and recompute.
        fresh = QCTResult.objects.filter(pk=row["pk"]).values(*row.keys()).first()
        if fresh is None:
            return 0
        row = fresh
    raise RuntimeError(f"QCT result {row['pk']} kept changing while it was recategorized; run the job again")


def log_access(user, project, action, detail=""):
    """Record a view or export of patient data."""
    AccessLog.objects.create(user=user if user and user.is_authenticated else None, project=project,
                             action=action, detail=detail[:300])

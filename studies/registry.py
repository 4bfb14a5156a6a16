"""Registry queries and changes that pages, commands and jobs share."""

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery

from .models import AccessLog, Cohort, CohortMember, Exam, ExclusionFlag, QCTResult


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


def set_split(exam, split, cohort=None):
    """Put ``exam`` in ``cohort`` (the project's default cohort if None) with ``split``."""
    cohort = cohort or exam.patient.project.default_cohort()
    if cohort.frozen:
        raise ValueError(f"cohort {cohort.name!r} is frozen: a model was trained on its splits")
    member, created = CohortMember.objects.get_or_create(cohort=cohort, exam=exam, defaults={"split": split})
    if not created and member.split != split:
        member.split = split
        member.save()
    return member


def recategorize_project(project, progress=None):
    """Recompute ``qct_bmd`` and ``category`` of every QCT result after the thresholds changed."""
    results = QCTResult.objects.filter(exam__patient__project=project).select_related("exam__patient__project")
    total = results.count()
    changed = 0
    with transaction.atomic():
        for done, result in enumerate(results.iterator(chunk_size=2000), start=1):
            before = result.category
            result.save()
            changed += result.category != before
            if progress and done % 2000 == 0:
                progress(done / total, f"{done} of {total}")
    return changed


def log_access(user, project, action, detail=""):
    """Record a view or export of patient data."""
    AccessLog.objects.create(user=user if user and user.is_authenticated else None, project=project,
                             action=action, detail=detail[:300])

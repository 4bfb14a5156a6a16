"""Registry models: projects and their members, patients, exams, QCT reference values, exclusion flags,
cohorts with splits, background jobs and the access log for PHI views and exports."""

from django.conf import settings
from django.db import models, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from analysis.categories import CATEGORIES, Thresholds


class Role(models.TextChoices):
    COORDINATOR = "coordinator", "Coordinator"
    ANNOTATOR = "annotator", "Annotator"
    PI = "pi", "PI"
    ADMIN = "admin", "Admin"


# Who may do what; views ask these sets rather than naming roles.
REGISTRY_EDITORS = frozenset({Role.COORDINATOR, Role.ADMIN})
TRAINING_LAUNCHERS = frozenset({Role.PI, Role.ADMIN})
MEMBER_MANAGERS = frozenset({Role.ADMIN})


# The job kind that trains a project's model grid; one such job per project may be queued or running.
TRAINING_JOB_KIND = "analysis.train_grid"


class EditConflict(Exception):
    """A save of a row that someone else changed (or deleted) since it was read.

    Attributes
    ----------
    model : type
        The model class.
    pk : int
    expected : int
        The version the caller read.
    current : int or None
        The version stored now; None when the row was deleted.
    """

    def __init__(self, model, pk, expected, current):
        self.model, self.pk, self.expected, self.current = model, pk, expected, current
        name = model._meta.verbose_name
        if current is None:
            detail = f"{name} {pk} was deleted since it was read"
        else:
            detail = f"{name} {pk} changed since it was read (version {expected}, now {current})"
        super().__init__(detail)


class VersionedModel(models.Model):
    """Optimistic versioning: every update of a stored row claims it with a conditional update on the version
    it was read at, so a stale copy can never be written over a newer row (``EditConflict`` instead).

    Pages carry the version a form was opened at (see ``studies.forms``); jobs and importers that read the row
    in their own transaction simply save it and are told when someone else was faster.
    """

    version = models.PositiveIntegerField(default=1, editable=False)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self._state.adding or self.pk is None:
            return super().save(*args, **kwargs)
        model = type(self)
        with transaction.atomic():
            claimed = model._base_manager.filter(pk=self.pk, version=self.version).update(version=F("version") + 1)
            if not claimed:
                current = model._base_manager.filter(pk=self.pk).values_list("version", flat=True).first()
                raise EditConflict(model, self.pk, self.version, current)
            self.version += 1
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "version"}
            super().save(*args, **kwargs)


class Project(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # Category thresholds (mg/cm3) are project data; both boundaries belong to osteopenia.
    osteoporosis_below = models.FloatField(default=80.0)
    normal_above = models.FloatField(default=120.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(osteoporosis_below__lt=models.F("normal_above")), name="project_thresholds_ordered"
            )
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("studies:project_detail", args=[self.pk])

    @property
    def thresholds(self):
        return Thresholds(self.osteoporosis_below, self.normal_above)

    def default_cohort(self):
        cohort, _ = Cohort.objects.get_or_create(project=self, name=Cohort.DEFAULT_NAME)
        return cohort


class Membership(VersionedModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_role_per_member")]

    def __str__(self):
        return f"{self.user} in {self.project} as {self.get_role_display()}"


class Sex(models.TextChoices):
    FEMALE = "F", "Female"
    MALE = "M", "Male"


class Patient(models.Model):
    """A research subject, known only by a project-scoped pseudonym (the PHI map lives elsewhere)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="patients")
    pseudonym = models.CharField("patient id", max_length=64)
    sex = models.CharField(max_length=1, choices=Sex.choices)
    birth_year = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pseudonym"]
        constraints = [models.UniqueConstraint(fields=["project", "pseudonym"], name="unique_pseudonym_per_project")]

    def __str__(self):
        return self.pseudonym

    def get_absolute_url(self):
        return reverse("studies:patient_detail", args=[self.project_id, self.pk])

    def get_additional_data(self):
        return {"project_id": self.project_id, "patient_id": self.pk}


class Region(models.TextChoices):
    CHEST = "chest", "Chest"
    ABDOMEN = "abdomen", "Abdomen"
    BOTH = "both", "Chest and abdomen"


class Exam(VersionedModel):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="exams")
    exam_date = models.DateField()
    age_at_exam = models.PositiveSmallIntegerField(null=True, blank=True, help_text="years")
    region = models.CharField(max_length=10, choices=Region.choices)
    study_uid = models.CharField("StudyInstanceUID", max_length=64, blank=True)
    series_uid = models.CharField("SeriesInstanceUID", max_length=64, blank=True)
    scanner_model = models.CharField(max_length=100, blank=True)
    kvp = models.FloatField("kVp", null=True, blank=True)
    slice_thickness_mm = models.FloatField(null=True, blank=True)
    contrast = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["patient__pseudonym", "exam_date"]
        constraints = [models.UniqueConstraint(fields=["patient", "exam_date"], name="one_exam_per_patient_day")]

    def __str__(self):
        return f"{self.patient.pseudonym} {self.exam_date:%Y-%m-%d}"

    def get_additional_data(self):
        return {"project_id": self.patient.project_id, "patient_id": self.patient_id}


class QCTResult(VersionedModel):
    """Volumetric BMD (mg/cm3) of L1-L3 by QCT; the reference value is the mean of the measured vertebrae."""

    exam = models.OneToOneField(Exam, on_delete=models.CASCADE, related_name="qct")
    bmd_l1 = models.FloatField("BMD L1 (mg/cm3)", null=True, blank=True)
    bmd_l2 = models.FloatField("BMD L2 (mg/cm3)", null=True, blank=True)
    bmd_l3 = models.FloatField("BMD L3 (mg/cm3)", null=True, blank=True)
    # Which vertebrae were used and why (e.g. "L2 fractured, replaced by L3").
    levels_note = models.CharField(max_length=200, blank=True)
    # Derived on save; stored so the registry can filter and sort 100,000 rows by them.
    qct_bmd = models.FloatField("QCT BMD (mg/cm3)", null=True, editable=False)
    category = models.CharField(max_length=12, choices=[(c, c) for c in CATEGORIES], blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["category"])]

    def __str__(self):
        return f"QCT {self.exam}: {self.qct_bmd:.1f} mg/cm3" if self.qct_bmd is not None else f"QCT {self.exam}"

    @property
    def measured_levels(self):
        return {level: value for level, value in self.values().items() if value is not None}

    def values(self):
        return {"L1": self.bmd_l1, "L2": self.bmd_l2, "L3": self.bmd_l3}

    def derive(self, thresholds):
        """Set ``qct_bmd`` (mean of measured vertebrae) and ``category`` from the project's thresholds."""
        measured = list(self.measured_levels.values())
        self.qct_bmd = round(sum(measured) / len(measured), 3) if measured else None
        self.category = thresholds.categorize(self.qct_bmd) or ""

    def save(self, *args, **kwargs):
        # The thresholds are read from the database at save time, not from a project object that may have
        # been loaded before a threshold change: the recategorize job relies on every later save using the
        # new thresholds.
        project = Project.objects.only("osteoporosis_below", "normal_above").get(patients__exams=self.exam_id)
        self.derive(project.thresholds)
        super().save(*args, **kwargs)

    def get_additional_data(self):
        patient = self.exam.patient
        return {"project_id": patient.project_id, "patient_id": patient.pk}


class ExclusionReason(models.TextChoices):
    SPINE_SURGERY = "spine_surgery", "Prior spine surgery"
    VERTEBRAL_FRACTURE = "vertebral_fracture", "Vertebral fracture"
    FOCAL_LESION = "focal_lesion", "Focal bone lesion (bone island, cyst, tumour)"
    DEFORMITY = "deformity", "Severe scoliosis or deformity"
    ARTEFACT = "artefact", "Image artefacts (motion, breathing, metal)"
    OTHER = "other", "Other"


class ExclusionFlag(VersionedModel):
    """An exclusion criterion met by a patient (exam empty) or by one exam. Excluded cases stay in the
    registry, flagged, and are left out of training."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="exclusions")
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, null=True, blank=True, related_name="exclusions")
    reason = models.CharField(max_length=30, choices=ExclusionReason.choices)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.patient}: {self.get_reason_display()}"

    def get_additional_data(self):
        return {"project_id": self.patient.project_id, "patient_id": self.patient_id}


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VALIDATION = "validation", "Validation"
    TEST = "test", "Test"


class Cohort(models.Model):
    DEFAULT_NAME = "main"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cohorts")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    # Frozen once a model has been trained on its splits: memberships and splits no longer change.
    frozen = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_cohort_name")]

    def __str__(self):
        return f"{self.project} / {self.name}"


class CohortMember(VersionedModel):
    cohort = models.ForeignKey(Cohort, on_delete=models.CASCADE, related_name="members")
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="cohort_memberships")
    split = models.CharField(max_length=10, choices=Split.choices, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cohort", "exam"], name="exam_once_per_cohort")]
        indexes = [models.Index(fields=["exam", "cohort"])]

    def __str__(self):
        return f"{self.exam} in {self.cohort.name} ({self.split or 'unassigned'})"

    def get_additional_data(self):
        return {"project_id": self.cohort.project_id, "patient_id": self.exam.patient_id}


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Job(models.Model):
    """One background job as the user sees it; the RQ job id links it to the queue.

    ``attempts`` numbers the attempts (0 for the first run); a retry or a cancellation starts a new one, and
    every write of a running attempt (claim, progress, result, failure) is a conditional update on
    (id, attempts, state), so an attempt that was superseded can never write again (see ``studies.jobs``).
    ``error`` is one sentence a member can read; ``traceback`` is for project admins only.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, blank=True, related_name="jobs")
    kind = models.CharField(max_length=60)
    params = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=30, default="default")
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED)
    rq_job_id = models.CharField(max_length=64, blank=True)
    worker_name = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    # Who started the current attempt by "Retry" (None: the first attempt, or a retry by the system): its
    # audit entries name them, not the job's submitter.
    retried_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # When the current attempt was (re-)enqueued: the reconciler gives a queued row this long to reach Redis.
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"])]
        constraints = [
            # A second click on "Train" while a training of the project is queued or running must not start a
            # second grid: the database refuses the row, whatever the timing of the two requests.
            models.UniqueConstraint(
                fields=["project"], condition=Q(kind=TRAINING_JOB_KIND, state__in=["queued", "running"]),
                name="one_active_training_per_project",
            )
        ]

    def __str__(self):
        return f"{self.kind} #{self.pk} ({self.state})"

    def get_absolute_url(self):
        return reverse("studies:job_detail", args=[self.pk])

    @property
    def kind_label(self):
        """The kind's human name ("Train the model grid"), from ``studies.job_kinds``."""
        from .job_kinds import kind_of  # job_kinds imports this module

        return kind_of(self.kind).label

    @property
    def is_finished(self):
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @property
    def duration_s(self):
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class AppendOnlyError(Exception):
    """An entry of an append-only log (the access log) was about to be changed or deleted."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model._meta.verbose_name} entries are append-only: not updated")

    def delete(self):
        raise AppendOnlyError(f"{self.model._meta.verbose_name} entries are append-only: not deleted")


def account_name(user, name):
    """Who acted: the user's name, or ``name`` (the name kept with the row when it was written) marked as a
    deleted account once the account is gone (deleting a user clears the link, SET_NULL, and the row stays);
    None when no one did."""
    if user is not None:
        return user.get_username()
    return f"{name} (account deleted)" if name else None


class AccessLog(models.Model):
    """Who looked at or exported patient data (PHI views and exports). Append-only: entries are created and
    never changed or deleted, by the admin (no change or delete permission) nor in code (these guards).

    ``username`` is the user's name when the entry was written: deleting the user account clears the link
    (``user``, SET_NULL: the entry stays), and the entry still names who it was."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    username = models.CharField(max_length=150, blank=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="access_log")
    action = models.CharField(max_length=40)
    detail = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(default=timezone.now)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-at"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.who} {self.action} {self.detail}"

    @property
    def who(self):
        """The user's name; marked as a deleted account once the user is gone."""
        return account_name(self.user, self.username) or "anonymous"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("access log entries are append-only: not changed")
        if self.user is not None and not self.username:
            self.username = self.user.get_username()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("access log entries are append-only: not deleted")
from .pacs.models import *  # noqa

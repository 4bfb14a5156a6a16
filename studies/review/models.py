"""Case review: one review case per measured exam, the readings of its readers, comments and the history of
every review action.

A reading holds a reader's working level map (segment index -> level name) with a version number. Every
change is a conditional update on that version, so two people saving the same reading at once cannot
overwrite each other: the second is told what changed in between (:mod:`.actions`). In double reading each
reader has a reading of their own and sees only that one until both have decided; a disagreement gets a third,
adjudication reading. The accepted result becomes a new, immutable measurement run (:mod:`.relabel`).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.urls import reverse

from analysis.models import MeasurementRun
from studies.models import Exam, Project, account_name


class CaseStatus(models.TextChoices):
    PENDING = "pending", "To review"
    ADJUDICATION = "adjudication", "Readers disagree: adjudication"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    RESEGMENT = "resegment", "Re-segmentation requested"


OPEN_STATUSES = (CaseStatus.PENDING, CaseStatus.ADJUDICATION)


class Decision(models.TextChoices):
    ACCEPT = "accept", "Accept"
    REJECT = "reject", "Reject exam"
    RESEGMENT = "resegment", "Request re-segmentation"


class ReadingKind(models.TextChoices):
    SINGLE = "single", "Reading"
    FIRST = "first", "First reading"
    SECOND = "second", "Second reading"
    ADJUDICATION = "adjudication", "Adjudication"


class ReviewSettings(models.Model):
    """A project's review set-up: the share of cases read twice and the round-robin position."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="review_settings")
    double_read_share = models.FloatField(default=0.0, help_text="fraction 0-1 of new cases read by two readers")
    adjudicator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    next_reader = models.PositiveIntegerField(default=0, help_text="round-robin position among the readers")

    def get_additional_data(self):
        return {"project_id": self.project_id}


class ReviewCaseQuerySet(models.QuerySet):
    def reviewed(self):
        """The cases accepted in review now: the one definition of reviewed data, for training a network,
        comparing segmenters and choosing an exam's measurements. A case sent back to re-segmentation (and
        then perhaps rejected) leaves it, and with it the run it had accepted."""
        return self.filter(status=CaseStatus.ACCEPTED)

    def reviewed_run_ids(self):
        """The :attr:`ReviewCase.reviewed_run` ids of the reviewed cases."""
        return self.reviewed().values_list(Coalesce("result_run", "base_run"), flat=True)


class ReviewCase(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="review_cases")
    exam = models.OneToOneField(Exam, on_delete=models.CASCADE, related_name="review_case")
    # The run under review, and the reviewed run that replaced it (accepted relabels only).
    base_run = models.ForeignKey(MeasurementRun, on_delete=models.PROTECT, related_name="+")
    result_run = models.ForeignKey(MeasurementRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=20, choices=CaseStatus.choices, default=CaseStatus.PENDING)
    # Need for review (higher first): withheld levels, low confidence and flags, computed when the case is
    # made so the queue is one indexed, ordered query however long it is.
    priority = models.IntegerField(default=0)
    priority_reasons = models.JSONField(default=list, blank=True)
    # 1 while the case is open (to review or in adjudication), else 0: computed and stored by the database from
    # ``status``. The queue filters on this one value, so the (project, in_queue, -priority, id) index gives
    # its order: filtering on ``status IN (pending, adjudication)`` made SQLite sort every open case of the
    # project (with its joined exam and patient) for each page. An integer, not a boolean: Django writes a
    # boolean filter as the bare column, which SQLite does not match to the index.
    in_queue = models.GeneratedField(
        expression=models.Case(models.When(status__in=[s.value for s in OPEN_STATUSES], then=models.Value(1)),
                               default=models.Value(0)),
        output_field=models.PositiveSmallIntegerField(), db_persist=True)
    double_read = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    objects = ReviewCaseQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["project", "status", "-priority", "id"], name="review_queue_order"),
                   models.Index(fields=["project", "in_queue", "-priority", "id"], name="review_open_queue_order")]

    def __str__(self):
        return f"review of exam {self.exam_id} ({self.status})"

    def get_absolute_url(self):
        return reverse("review:case", args=[self.project_id, self.exam_id])

    @property
    def reviewed_run(self):
        """The run an accepted case stands for: the reviewed run made on acceptance (a relabel), else the run
        under review accepted as it was (a reader's mask edit, if any, is that run)."""
        return self.result_run or self.base_run

    def get_additional_data(self):
        return {"project_id": self.project_id, "exam_id": self.exam_id}

    @property
    def need(self):
        """The priority as readers read it, by the bands of ``actions.priority_of``: "high" (no vertebra found
        or levels withheld), "medium" (a level named with low confidence), "low" (flags only), else "routine"."""
        if self.priority >= 1000:
            return "high"
        if self.priority >= 100:
            return "medium"
        return "low" if self.priority > 0 else "routine"


class Reading(models.Model):
    case = models.ForeignKey(ReviewCase, on_delete=models.CASCADE, related_name="readings")
    kind = models.CharField(max_length=20, choices=ReadingKind.choices, default=ReadingKind.SINGLE)
    # The assigned reader (None: any annotator of the project may take a single reading).
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="review_readings")
    # {"1": "T5", "2": null, ...}: the reader's level name for every segment (JSON keys are strings).
    level_map = models.JSONField(default=dict)
    unusable = models.JSONField(default=list, blank=True, help_text="segment indices marked unusable")
    version = models.PositiveIntegerField(default=1)
    decision = models.CharField(max_length=20, choices=Decision.choices, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "kind"], name="one_reading_per_kind")]
        indexes = [models.Index(fields=["reader", "decided_at"])]

    def __str__(self):
        return f"{self.get_kind_display()} of case {self.case_id}"

    def get_additional_data(self):
        return {"project_id": self.case.project_id, "exam_id": self.case.exam_id}


class ReviewEvent(models.Model):
    """One review action as readers see it in the case history (the audit log holds the field changes).

    ``username`` is the user's name when the event was recorded, so the history still names them after the
    account is deleted."""

    case = models.ForeignKey(ReviewCase, on_delete=models.CASCADE, related_name="events")
    reading = models.ForeignKey(Reading, on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    username = models.CharField(max_length=150, blank=True, editable=False)
    action = models.CharField(max_length=30)
    summary = models.CharField(max_length=300)
    # The reading's version after the action: a reader who opened version v is shown the events after v.
    version = models.PositiveIntegerField(default=0)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.who or 'system'}: {self.summary}"

    @property
    def who(self):
        return account_name(self.user, self.username)

    def save(self, *args, **kwargs):
        if self.user is not None and not self.username:
            self.username = self.user.get_username()
        super().save(*args, **kwargs)


class ReviewComment(models.Model):
    """A comment on a case; ``author_name`` keeps the author's name when the account is deleted."""

    case = models.ForeignKey(ReviewCase, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    author_name = models.CharField(max_length=150, blank=True, editable=False)
    text = models.TextField(max_length=2000)
    # Comments written during a blinded reading stay hidden from the other reader until both decided.
    reading = models.ForeignKey(Reading, on_delete=models.SET_NULL, null=True, blank=True, related_name="comments")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "pk"]

    @property
    def who(self):
        return account_name(self.author, self.author_name)

    def save(self, *args, **kwargs):
        if self.author is not None and not self.author_name:
            self.author_name = self.author.get_username()
        super().save(*args, **kwargs)

    def get_additional_data(self):
        return {"project_id": self.case.project_id, "exam_id": self.case.exam_id}


class ResegmentationRequest(models.Model):
    """A reader's request to segment and measure the exam again with a chosen segmenter (:mod:`.resegment`).

    The request starts the exam's segment-and-measure job. While that job is queued or running the request
    is ``active``, and the database holds at most one active request per case: a second request (a second
    click, another reader) is refused by the constraint whatever the timing. When the job succeeds its new run
    becomes the case's run and the case is back in the queue; the replaced run stays as it was.
    """

    case = models.ForeignKey(ReviewCase, on_delete=models.CASCADE, related_name="resegmentations")
    # The segmenter by name, resolved when requested ("anatomy" or a SegmenterVersion of the project), so a
    # later promotion does not change what the request asked for.
    segmenter = models.CharField(max_length=100)
    job = models.ForeignKey("studies.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    replaced_run = models.ForeignKey(MeasurementRun, on_delete=models.PROTECT, related_name="+")
    new_run = models.ForeignKey(MeasurementRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    active = models.BooleanField(default=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["case"], condition=Q(active=True),
                                               name="one_active_resegmentation_per_case")]

    def __str__(self):
        return f"re-segmentation of case {self.case_id} with {self.segmenter}"

    def get_additional_data(self):
        return {"project_id": self.case.project_id, "exam_id": self.case.exam_id}

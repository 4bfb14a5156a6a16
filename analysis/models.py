"""Analysis records: measurement runs with their per-level HU, model versions with their evaluations and
predictions.

Measurement runs and model versions are immutable once saved: a re-measurement or a retraining is a new row,
so a paper can always name the exact numbers it used. Which run feeds a model is chosen per exam by
:func:`analysis.modeling.records.chosen_runs` (the latest run of a named source) and recorded in the model
version's data snapshot.
"""

from auditlog.registry import auditlog
from django.conf import settings
from django.db import models

from studies.models import Cohort, Exam, Project, Split


class ImmutableRecordError(Exception):
    """An attempt to change a saved measurement run, level measurement or model version."""


class ImmutableModel(models.Model):
    """Rows that are written once: ``save`` on a stored row raises instead of updating it."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ImmutableRecordError(
                f"{type(self).__name__} {self.pk} is immutable; record a new one instead of changing it"
            )
        super().save(*args, **kwargs)


class MeasurementRun(ImmutableModel):
    """One measurement of an exam's vertebrae: by the product's pipeline or imported from another tool."""

    PIPELINE = "bmdsite"

    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="measurement_runs")
    # "bmdsite" for the image pipeline; the tool's name for imported values ("TotalSegmentator", "synthetic").
    source = models.CharField(max_length=60, default=PIPELINE)
    segmenter_version = models.CharField(max_length=100, blank=True)
    parameters = models.JSONField(default=dict, blank=True, help_text="e.g. {\"erosion_mm\": 3.0}")
    timings = models.JSONField(default=dict, blank=True, help_text="seconds per step")
    flags = models.JSONField(default=list, blank=True, help_text="case-level QA flags")
    code_version = models.CharField(max_length=100, blank=True)
    # The image pipeline's inputs and outputs: which stored series, and the VerSe body label map it measured.
    series_uid = models.CharField(max_length=64, blank=True)
    labels = models.FileField(upload_to="labels/%Y/%m/", blank=True, max_length=300)
    # Every body segment found, named or not (the OUT.json "segments" list of SPEC section 6), and the
    # segment indices (1 at the head end) as NIfTI on the stored series' grid: a reviewer can name the
    # whole spine by naming one segment.
    segments = models.JSONField(default=list, blank=True, help_text="every body segment, named or not")
    segment_labels = models.FileField(upload_to="segments/%Y/%m/", blank=True, max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["exam", "-created_at", "-pk"]
        indexes = [models.Index(fields=["exam", "source", "-created_at"])]

    def __str__(self):
        return f"{self.source} run {self.pk} of exam {self.exam_id}"

    def get_additional_data(self):
        return {"project_id": self.exam.patient.project_id, "patient_id": self.exam.patient_id}

    @property
    def level_notes(self):
        """The segmenter's account of how it named the levels (anchors used, levels withheld and why)."""
        return list((self.parameters or {}).get("notes") or [])

    def levels_with_confidence(self):
        """(LevelMeasurement, confidence or None) pairs: the segmenter's confidence in each level's name."""
        confidence = (self.parameters or {}).get("level_confidence") or {}
        return [(m, confidence.get(m.level)) for m in self.levels.all()]


class LevelMeasurement(ImmutableModel):
    """Trabecular HU of one vertebra in one run (``analysis.measurement.LevelMeasurement`` stored)."""

    run = models.ForeignKey(MeasurementRun, on_delete=models.CASCADE, related_name="levels")
    level = models.CharField(max_length=4, help_text="vertebra name, e.g. T12")
    mean_hu = models.FloatField(null=True, blank=True, help_text="HU; empty when the ROI is empty")
    median_hu = models.FloatField(null=True, blank=True)
    sd_hu = models.FloatField(null=True, blank=True)
    roi_voxels = models.PositiveIntegerField(null=True, blank=True)
    body_volume_ml = models.FloatField(null=True, blank=True)
    centroid_mm = models.JSONField(null=True, blank=True, help_text="[x, y, z] in the input's world frame")
    flags = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "level"], name="one_value_per_level_and_run")]

    def __str__(self):
        return f"{self.level}: {self.mean_hu} HU (run {self.run_id})"

    @classmethod
    def from_measured(cls, run, measured, extra_flags=()):
        """The row of one ``analysis.measurement.LevelMeasurement`` of ``run`` (not saved)."""
        m = measured
        return cls(run=run, level=m.level, mean_hu=m.mean_hu, median_hu=m.median_hu, sd_hu=m.sd_hu,
                   roi_voxels=m.roi_voxels, body_volume_ml=m.body_volume_ml,
                   centroid_mm=list(m.centroid_mm) if m.centroid_mm is not None else None,
                   flags=list(m.flags) + list(extra_flags))


class Task(models.TextChoices):
    CLASSIFICATION = "classification", "Classification (3 categories)"
    REGRESSION = "regression", "Regression (BMD, mg/cm3)"


class Algorithm(models.TextChoices):
    BDT = "BDT", "Bagging decision trees"
    LR = "LR", "Logistic regression"
    RF = "RF", "Random forest"
    SGD = "SGD", "SGD regression"
    EXTERNAL = "external", "External model (imported predictions)"


class FeatureSet(models.TextChoices):
    CHEST = "chest", "Chest T5-T10"
    ABDOMEN = "abdomen", "Abdomen T12-L2"
    CHEST_CAL = "chest_cal", "Chest T5-T10-Cal"
    EXTERNAL = "external", "External"


class ModelVersion(ImmutableModel):
    """One fitted model (or one external model's predictions) with everything needed to reproduce it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    cohort = models.ForeignKey(Cohort, on_delete=models.PROTECT, null=True, blank=True, related_name="model_versions")
    name = models.CharField(max_length=150)
    task = models.CharField(max_length=20, choices=Task.choices)
    algorithm = models.CharField(max_length=10, choices=Algorithm.choices)
    hyperparameters = models.JSONField(default=dict, blank=True)
    feature_set = models.CharField(max_length=10, choices=FeatureSet.choices)
    feature_names = models.JSONField(default=list, blank=True)
    region = models.CharField(max_length=10, blank=True, help_text="chest or abdomen")
    # "" for feature sets without calibration; otherwise the ThoracolumbarCalibration variant.
    calibration_variant = models.CharField(max_length=20, blank=True)
    calibration = models.JSONField(null=True, blank=True, help_text="k, intercept, R^2 fitted on the training split")
    measurement_source = models.CharField(max_length=60, blank=True)
    random_seed = models.IntegerField(null=True, blank=True)
    # Which exams, which label values, which measurement runs, which split, which exams were left out and why.
    data_snapshot = models.JSONField(default=dict, blank=True)
    code_version = models.CharField(max_length=100, blank=True)
    artefact = models.FileField(upload_to="models/%Y/%m/", blank=True)
    artefact_sha256 = models.CharField(max_length=64, blank=True)
    external = models.BooleanField(default=False)
    fit_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return self.name

    def get_additional_data(self):
        return {"project_id": self.project_id}

    @property
    def classes(self):
        return self.data_snapshot.get("classes", [])


class Evaluation(models.Model):
    """Metrics of a model version on one split (``to_dict()`` of the ``analysis.stats`` results)."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    split = models.CharField(max_length=10, choices=Split.choices)
    n = models.PositiveIntegerField()
    metrics = models.JSONField()
    n_resamples = models.PositiveIntegerField(default=0)
    # analysis.stats.paired.resample_state: the statistic on every bootstrap resample and the DeLong
    # placements, so comparison pages pair two versions without recomputing anything (about 20 kB; pages
    # that do not pair versions defer it).
    resamples = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_version", "split"], name="one_evaluation_per_split")]

    def __str__(self):
        return f"{self.model_version} on {self.split}"


class Prediction(models.Model):
    """A model version's output for one exam; ``split`` is empty for screening predictions."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="predictions")
    measurement_run = models.ForeignKey(MeasurementRun, on_delete=models.SET_NULL, null=True, blank=True)
    split = models.CharField(max_length=10, choices=Split.choices, blank=True)
    predicted_bmd = models.FloatField("predicted BMD (mg/cm3)", null=True, blank=True)
    probabilities = models.JSONField(null=True, blank=True, help_text="{category: probability}")
    predicted_category = models.CharField(max_length=12, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_version", "exam"], name="one_prediction_per_exam")]
        indexes = [models.Index(fields=["model_version", "split"])]

    def __str__(self):
        return f"{self.model_version} -> {self.exam_id}: {self.predicted_category}"



class SegmenterVersion(models.Model):
    """One trained segmentation network (analysis/segmentation/network) with everything to reproduce it.

    Everything but ``promoted`` is written once, when training ends: the weights file (Django storage, so
    an object store works, with its SHA-256 checked at load), the architecture, preprocessing and inference
    parameters, the label map (output class -> "body" or a level), the training and held-out data, the
    per-epoch log (one entry per epoch and the job attempt that ran it, so a resumed job shows both
    attempts), the held-out per-level Dice and the code version. Promotion to the project default is
    explicit (:func:`analysis.segmentation.network.registry.promote`) and audited.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="segmenter_versions")
    name = models.CharField(max_length=100, unique=True)
    weights = models.FileField(upload_to="segmenters/%Y/%m/", max_length=300)
    weights_sha256 = models.CharField(max_length=64)
    architecture = models.JSONField(default=dict)
    preprocessing = models.JSONField(default=dict)
    inference = models.JSONField(default=dict)
    label_map = models.JSONField(default=dict, help_text='output class -> "body" or a level name')
    training_data = models.JSONField(default=dict, help_text="training and held-out cases (sources)")
    training_log = models.JSONField(default=list, help_text="one entry per epoch: attempt, loss, held-out Dice")
    metrics = models.JSONField(default=dict, help_text="held-out Dice per level after the last epoch")
    random_seed = models.IntegerField(default=0)
    code_version = models.CharField(max_length=100, blank=True)
    training_job = models.ForeignKey("studies.Job", on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    promoted = models.BooleanField(default=False, help_text="the project's default segmenter")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=models.Q(promoted=True),
                                    name="one_promoted_segmenter_per_project"),
        ]

    def __str__(self):
        return self.name

    def get_additional_data(self):
        return {"project_id": self.project_id}


class SegmenterComparison(models.Model):
    """Two segmenters on a project's reviewed cases (:mod:`analysis.segmentation.comparison`), computed by a
    job (:func:`analysis.segmenters.run_comparison`) and stored: the page only reads ``results``.

    ``reference_runs`` are the reviewed runs (one per exam) whose masks were the reference when the comparison
    was started; ``results`` holds the per-level Dice of each segmenter, their level agreement, the paired ROI
    HU statistics and every case's numbers. Written once, by the job.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="segmenter_comparisons")
    segmenter_a = models.CharField(max_length=100)
    segmenter_b = models.CharField(max_length=100)
    job = models.ForeignKey("studies.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    reference_runs = models.JSONField(default=list, help_text="ids of the reviewed runs compared against")
    n_cases = models.PositiveIntegerField(null=True, blank=True)
    results = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.segmenter_a} vs {self.segmenter_b}"

    def get_additional_data(self):
        return {"project_id": self.project_id}


# Measurement runs and model versions are the inputs of labels and papers: who created or deleted them is
# audited (their contents never change, see ImmutableModel). A run's entry names what identifies it (exam,
# series, segmenter, code, label files, QA flags such as "reviewed" or "mask edited"); its per-segment list,
# parameters and timings are in the run itself, which is never changed.
auditlog.register(MeasurementRun, include_fields=["exam", "source", "segmenter_version", "code_version", "series_uid",
                                                  "labels", "segment_labels", "flags", "created_by"])
auditlog.register(ModelVersion, exclude_fields=["data_snapshot"])
auditlog.register(SegmenterVersion, exclude_fields=["training_log"])
auditlog.register(SegmenterComparison, exclude_fields=["results"])

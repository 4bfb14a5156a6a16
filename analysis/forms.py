"""Forms of the analysis pages."""

from django import forms
from django.db import IntegrityError, transaction

from studies import jobs
from studies.models import TRAINING_JOB_KIND, Cohort, Exam, Job, JobState, Split

from .models import ModelVersion

# Large JSON columns that version pickers and lists never show (every exam id, label and run of a version).
LIST_DEFERRED = ("data_snapshot", "feature_names")


class _VersionChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"#{obj.pk} {obj.name}"


class CompareForm(forms.Form):
    """Two or more versions of one project and one task, and the split to compare them on."""

    v = _VersionChoices(queryset=ModelVersion.objects.none(), label="Versions",
                        widget=forms.SelectMultiple(attrs={"size": 8}))
    split = forms.ChoiceField(choices=Split.choices, initial=Split.VALIDATION)

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        # Only this project's versions are choices: an id of another project is "not one of the choices".
        self.fields["v"].queryset = ModelVersion.objects.filter(project=project).order_by("pk").defer(*LIST_DEFERRED)

    def clean_v(self):
        versions = list(self.cleaned_data["v"])
        if len(versions) < 2:
            raise forms.ValidationError("Choose two or more versions to compare.")
        if len({v.task for v in versions}) > 1:
            raise forms.ValidationError("Choose versions of one task: classification or regression, not both.")
        return versions


class CohortTableForm(forms.Form):
    """Which cohort of the project, and whether excluded cases count."""

    cohort = forms.ChoiceField(initial=Cohort.DEFAULT_NAME)
    include_excluded = forms.BooleanField(required=False, label="include excluded cases")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        names = list(Cohort.objects.filter(project=project).order_by("name").values_list("name", flat=True))
        self.fields["cohort"].choices = [(n, n) for n in names]


class TrainForm(forms.Form):
    """Start the model grid: cohort, seed, and which measurement run each exam contributes."""

    cohort = forms.ChoiceField(label="Cohort")
    seed = forms.IntegerField(label="Seed", min_value=0, initial=0)
    measurement_source = forms.ChoiceField(label="Measurements", required=False)

    def __init__(self, *args, project, **kwargs):
        from analysis.modeling.records import PROJECT_DEFAULT_LABEL, source_choices

        super().__init__(*args, **kwargs)
        self.project = project
        cohorts = Cohort.objects.filter(project=project).order_by("name")
        self.fields["cohort"].choices = [(c.name, f"{c.name} (frozen)" if c.frozen else c.name) for c in cohorts]
        self.fields["cohort"].initial = Cohort.DEFAULT_NAME
        self._sources = dict(source_choices(Exam.objects.filter(patient__project=project)))
        self.fields["measurement_source"].choices = [("", PROJECT_DEFAULT_LABEL)] + [
            (name, f"only {name} ({n} exam{'s' if n != 1 else ''})") for name, n in self._sources.items()]

    def clean(self):
        from analysis.modeling.records import resolve_source

        data = super().clean()
        name = data.get("cohort")
        if name and not self.errors:
            cohort = Cohort.objects.get(project=self.project, name=name)
            try:
                resolve_source(Exam.objects.filter(cohort_memberships__cohort=cohort),
                               data.get("measurement_source") or None)
            except ValueError as exc:
                raise forms.ValidationError(f"Cannot train on cohort {name!r}: {exc}.") from None
        return data

    def submit(self, user):
        """Start the training job, unless one of this project's is queued or running.

        The database refuses a second active training row (constraint ``one_active_training_per_project``),
        so two clicks at the same moment start one job, never two.

        Returns
        -------
        Job or None
            None when refused; the form then says which job is already running.
        """
        data = self.cleaned_data
        try:
            with transaction.atomic():
                return jobs.submit(TRAINING_JOB_KIND, project=self.project, user=user, project_id=self.project.pk,
                                   cohort_name=data["cohort"], seed=data["seed"],
                                   measurement_source=data["measurement_source"] or None, user_id=user.pk)
        except IntegrityError:
            running = Job.objects.filter(project=self.project, kind=TRAINING_JOB_KIND,
                                         state__in=[JobState.QUEUED, JobState.RUNNING]).first()
            self.add_error(None, "A training of this project is already running"
                                 + (f" (job #{running.pk}, {running.state})" if running else "")
                                 + "; wait for it to finish before starting another.")
            self.running_job = running
            return None


class SplitsForm(forms.Form):
    """The study's splits for a cohort (new or not yet frozen)."""

    cohort = forms.CharField(max_length=100, help_text="an existing cohort that is not frozen, or a new name")
    test_from = forms.DateField(label="Test split from", help_text="exams on or after this date (YYYY-MM-DD)",
                                widget=forms.DateInput(attrs={"type": "date"}))
    validation_share = forms.FloatField(initial=0.2, min_value=0.01, max_value=0.99,
                                        help_text="share of the development exams; train gets round((1 - share) n)")
    stratify = forms.BooleanField(required=False, label="stratify by QCT category")
    seed = forms.IntegerField(initial=0, min_value=0)


class ReportForm(forms.Form):
    """Which versions the study report lays out (default: the latest training run) and which algorithms its
    figures draw (the paper: BDT for the ROC curves, SGD for the scatter and Bland-Altman plots)."""

    v = _VersionChoices(queryset=ModelVersion.objects.none(), label="Versions", required=False,
                        widget=forms.SelectMultiple(attrs={"size": 8}))
    classifier = forms.ChoiceField(choices=[(a, a) for a in ("BDT", "LR", "RF")], initial="BDT",
                                   label="Classifier in the figures")
    regressor = forms.ChoiceField(choices=[(a, a) for a in ("BDT", "SGD", "RF")], initial="SGD",
                                  label="Regressor in the figures")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["v"].queryset = ModelVersion.objects.filter(project=project).order_by("pk").defer(*LIST_DEFERRED)


class SegmenterTrainForm(forms.Form):
    """Train the segmentation network on training data the site offers (phantoms, imported label maps,
    cases accepted in review), each chosen for training or the held-out set."""

    USE = [("", "not used"), ("train", "train"), ("held_out", "held out")]

    name = forms.CharField(max_length=100, help_text="letters, digits, '.', '_' or '-'; becomes the version name")
    configuration = forms.ChoiceField(choices=[
        ("default", "network defaults (for a GPU worker)"),
        ("cpu_trial", "CPU trial (4 mm grid, 32³ windows, 10 steps per epoch)")])
    epochs = forms.IntegerField(min_value=1, max_value=500, initial=20)
    seed = forms.IntegerField(initial=0)
    phantoms = forms.IntegerField(min_value=0, max_value=50, initial=4, label="Phantoms for training")
    osteoporotic = forms.BooleanField(required=False, initial=True,
                                      label="every other training phantom with osteoporotic marrow")
    held_out_phantoms = forms.IntegerField(min_value=0, max_value=10, initial=1, label="Held-out phantoms",
                                           help_text="other seeds, stored RAS, osteoporotic marrow")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        from .segmenters import label_map_folders, reviewed_reference_runs

        self.reviewed = {f"run_{run.pk}": run for run in reviewed_reference_runs(project)}
        for key, run in self.reviewed.items():
            self.fields[key] = forms.ChoiceField(choices=self.USE, required=False, initial="train",
                                                 label=f"{run.exam.patient.pseudonym} {run.exam.exam_date:%Y-%m-%d}"
                                                       f" (reviewed run {run.pk})")
        self.label_maps = {f"map_{name}": source for name, source in label_map_folders().items()}
        for key, source in self.label_maps.items():
            self.fields[key] = forms.ChoiceField(choices=self.USE, required=False, initial="train",
                                                 label=f"{source['name']} ({source['format']} label map)")

    def case_fields(self):
        return [self[key] for key in [*self.reviewed, *self.label_maps]]

    def clean_name(self):
        from studies.models import Job, JobState

        name = self.cleaned_data["name"]
        # The version is registered when training ends: a name taken by a training still on its way is refused
        # now rather than after hours of training.
        if Job.objects.filter(kind="analysis.train_segmenter", state__in=[JobState.QUEUED, JobState.RUNNING],
                              params__name=name).exists():
            raise forms.ValidationError(f"a training of a version named {name!r} is queued or running; choose "
                                        "another name")
        return name

    def clean(self):
        data = super().clean()
        from .segmenters import phantom_sources

        train, held_out = [], []
        if data.get("phantoms"):
            train += phantom_sources(data["phantoms"], seed=data.get("seed") or 0,
                                     osteoporotic=data.get("osteoporotic", False))
        if data.get("held_out_phantoms"):
            held_out += phantom_sources(data["held_out_phantoms"], seed=data.get("seed") or 0, held_out=True)
        for key, run in self.reviewed.items():
            use = data.get(key)
            if use:
                (train if use == "train" else held_out).append({"kind": "measurement_run", "id": run.pk})
        for key, source in self.label_maps.items():
            use = data.get(key)
            if use:
                (train if use == "train" else held_out).append(source)
        if not train:
            raise forms.ValidationError("choose at least one training case (phantoms, label maps or reviewed cases)")
        data["train_sources"], data["held_out_sources"] = train, held_out
        return data


class MeasureExamForm(forms.Form):
    """Segment and measure an exam with one of the project's segmenters (empty: the project's default, its
    promoted version, else the rule-based one). The name is resolved when the job starts, so a later
    promotion does not change what the job runs; a name the project does not have is a form error."""

    segmenter = forms.CharField(required=False, max_length=100)

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project

    def choices(self):
        from .segmenters import segmenter_choices

        return segmenter_choices(self.project)

    def clean_segmenter(self):
        from .segmenters import SegmenterChoiceError, resolve_name

        try:
            return resolve_name(self.project, self.cleaned_data["segmenter"])
        except SegmenterChoiceError as exc:
            raise forms.ValidationError(str(exc)) from None

    def submit(self, exam, user):
        """Start the job; ``PermissionDenied`` for a role that may not start it."""
        from .segmenters import submit_measurement

        return submit_measurement(self.project, exam.pk, self.cleaned_data["segmenter"], user=user)


class SegmenterCompareForm(forms.Form):
    a = forms.ChoiceField(label="Segmenter A")
    b = forms.ChoiceField(label="Segmenter B")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        from .segmenters import segmenter_choices

        choices = segmenter_choices(project, with_default=False)
        self.fields["a"].choices = choices
        self.fields["b"].choices = choices
        if len(choices) > 1:
            self.fields["b"].initial = choices[1][0]

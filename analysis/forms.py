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

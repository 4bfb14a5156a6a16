"""Forms of the analysis pages."""

from django import forms

from studies.models import Cohort, Split

from .models import ModelVersion


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
        self.fields["v"].queryset = ModelVersion.objects.filter(project=project).order_by("pk")

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

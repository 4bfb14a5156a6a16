"""Registry forms. Value checks come from ``validation`` so pages and CSV import refuse the same values."""

from django import forms
from django.contrib.auth import get_user_model

from . import validation
from .models import Exam, ExclusionFlag, Membership, Patient, Project, QCTResult, Split
from .registry import set_split


class PatientForm(forms.ModelForm):
    class Meta:
        model = Patient
        fields = ["pseudonym", "sex", "birth_year"]
        help_texts = {"pseudonym": "The project's pseudonymous id, never a name or hospital number."}

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.instance.project = project

    def clean_pseudonym(self):
        pseudonym = self.cleaned_data["pseudonym"].strip()
        if validation.looks_like_formula(pseudonym):
            raise forms.ValidationError("A patient id cannot start with = + - or @.")
        clash = Patient.objects.filter(project=self.project, pseudonym=pseudonym).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f"Patient {pseudonym} already exists in this project.")
        return pseudonym

    def clean_birth_year(self):
        year = self.cleaned_data["birth_year"]
        if year is not None and not 1880 <= year <= 2100:
            raise forms.ValidationError("Birth year must be between 1880 and 2100.")
        return year


class ExamForm(forms.ModelForm):
    split = forms.ChoiceField(choices=[("", "unassigned")] + list(Split.choices), required=False,
                              help_text="Split in the project's main cohort.")

    class Meta:
        model = Exam
        fields = ["exam_date", "age_at_exam", "region", "study_uid", "series_uid", "scanner_model", "kvp",
                  "slice_thickness_mm", "contrast"]
        widgets = {"exam_date": forms.DateInput(attrs={"type": "date"})}

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.patient = patient
        self.instance.patient = patient
        if self.instance.pk:
            member = self.instance.cohort_memberships.filter(cohort__name="main",
                                                             cohort__project=patient.project).first()
            self.fields["split"].initial = member.split if member else ""

    def clean_exam_date(self):
        value = self.cleaned_data["exam_date"]
        try:
            validation.check_exam_date(value, "Exam date")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        clash = Exam.objects.filter(patient=self.patient, exam_date=value).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("This patient already has an exam on that date.")
        return value

    def clean_age_at_exam(self):
        age = self.cleaned_data["age_at_exam"]
        if age is not None and age > 120:
            raise forms.ValidationError("Age must be 0-120 years.")
        return age

    def _clean_uid(self, name, tag):
        value = self.cleaned_data[name].strip()
        try:
            validation.check_uid(value, tag)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return value

    def clean_study_uid(self):
        return self._clean_uid("study_uid", "StudyInstanceUID (0020,000D)")

    def clean_series_uid(self):
        return self._clean_uid("series_uid", "SeriesInstanceUID (0020,000E)")

    def save(self, commit=True):
        exam = super().save(commit=commit)
        if commit and (self.cleaned_data.get("split") or self.instance.cohort_memberships.exists()):
            set_split(exam, self.cleaned_data.get("split", ""))
        return exam


class QCTForm(forms.ModelForm):
    class Meta:
        model = QCTResult
        fields = ["bmd_l1", "bmd_l2", "bmd_l3", "levels_note"]
        help_texts = {"levels_note": "Which vertebrae were used and why, e.g. 'L2 fractured, replaced by L3'."}

    def _clean_bmd(self, name):
        value = self.cleaned_data[name]
        if value is not None:
            try:
                validation.check_bmd(value)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return value

    def clean_bmd_l1(self):
        return self._clean_bmd("bmd_l1")

    def clean_bmd_l2(self):
        return self._clean_bmd("bmd_l2")

    def clean_bmd_l3(self):
        return self._clean_bmd("bmd_l3")

    def clean(self):
        data = super().clean()
        if not self.errors and all(data.get(f) is None for f in ("bmd_l1", "bmd_l2", "bmd_l3")):
            raise forms.ValidationError("Enter the BMD of at least one of L1, L2, L3 (mg/cm3).")
        return data


class ExclusionFlagForm(forms.ModelForm):
    class Meta:
        model = ExclusionFlag
        fields = ["exam", "reason", "note"]

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.patient = patient
        self.fields["exam"].queryset = patient.exams.all()
        self.fields["exam"].required = False
        self.fields["exam"].empty_label = "the whole patient"


class ProjectThresholdsForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["description", "osteoporosis_below", "normal_above"]
        labels = {"osteoporosis_below": "Osteoporosis below (mg/cm3)", "normal_above": "Normal above (mg/cm3)"}
        widgets = {"description": forms.Textarea(attrs={"rows": 3, "cols": 40})}

    def clean(self):
        data = super().clean()
        low, high = data.get("osteoporosis_below"), data.get("normal_above")
        if low is not None and high is not None and not 0 < low < high <= 400:
            raise forms.ValidationError("Thresholds must satisfy 0 < osteoporosis < normal <= 400 mg/cm3.")
        return data


class MembershipForm(forms.ModelForm):
    username = forms.CharField()

    class Meta:
        model = Membership
        fields = ["role"]

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.project = project

    def clean_username(self):
        User = get_user_model()
        try:
            user = User.objects.get(username=self.cleaned_data["username"])
        except User.DoesNotExist:
            raise forms.ValidationError("No user with that name.") from None
        if Membership.objects.filter(project=self.instance.project, user=user).exists():
            raise forms.ValidationError("That user is already a member; change their role instead.")
        self.instance.user = user
        return user.username


class CSVUploadForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV, one row per patient exam; see the column list below.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 20 * 1024 * 1024:
            raise forms.ValidationError("The file is larger than 20 MB; split it or use the import_qct command.")
        return upload


class PatientFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Patient id or StudyInstanceUID",
                        widget=forms.TextInput(attrs={"placeholder": "patient id prefix or study UID"}))
    category = forms.ChoiceField(required=False, choices=[("", "any category"), ("osteoporosis", "osteoporosis"),
                                                          ("osteopenia", "osteopenia"), ("normal", "normal")])
    split = forms.ChoiceField(required=False, choices=[("", "any split")] + list(Split.choices)
                              + [("none", "unassigned")])
    excluded = forms.ChoiceField(required=False, choices=[("", "excluded or not"), ("yes", "excluded"),
                                                          ("no", "not excluded")])
    region = forms.ChoiceField(required=False, choices=[("", "any region"), ("chest", "chest"),
                                                        ("abdomen", "abdomen"), ("both", "both")])
    per_page = forms.TypedChoiceField(required=False, coerce=int, empty_value=50,
                                      choices=[(25, "25"), (50, "50"), (100, "100"), (200, "200")])

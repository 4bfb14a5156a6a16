"""Registry forms. Value checks come from ``validation`` so pages and CSV import refuse the same values."""

import datetime as dt

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.template.defaultfilters import floatformat

from . import validation
from .models import CohortMember, EditConflict, Exam, ExclusionFlag, Membership, Patient, Project, QCTResult, Split
from .registry import FrozenSplitError, set_split


class VersionedFormMixin:
    """A model form that carries the version its instance was opened at (a hidden field).

    Saving sets that version on the instance, so the model's conditional save refuses it (``EditConflict``)
    when someone else saved the row since; :func:`report_conflict` then tells the user what differs and
    moves the hidden version forward, so that saving again overrides knowingly.
    """

    version_fields = ("version",)

    def _add_version_field(self):
        self.fields["version"] = forms.IntegerField(widget=forms.HiddenInput, min_value=0,
                                                    required=bool(self.instance.pk))
        if self.instance.pk:
            self.fields["version"].initial = self.instance.version

    def save(self, commit=True):
        version = self.cleaned_data.get("version")
        if self.instance.pk and version is not None:
            self.instance.version = version
        return super().save(commit=commit)

    def stored_values(self):
        """``{field name: value stored now}`` for the form's fields; None when the row is gone."""
        if not self.instance.pk:
            return None
        current = type(self.instance)._base_manager.filter(pk=self.instance.pk).first()
        if current is None:
            return None
        return {name: getattr(current, name, None) for name in self.fields if name not in self.version_fields}

    def stored_versions(self):
        """``{hidden version field: version stored now}``."""
        if not self.instance.pk:
            return {}
        version = type(self.instance)._base_manager.filter(pk=self.instance.pk).values_list(
            "version", flat=True).first()
        return {} if version is None else {"version": version}


def _display(value):
    if value is None or value == "":
        return "empty"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return floatformat(value, -3)
    return str(value)


def _shown(field, value):
    """A value as the form shows it: a choice by its label ("Chest", not "chest")."""
    plain_choices = isinstance(field, forms.ChoiceField) and not isinstance(field, forms.ModelChoiceField)
    if plain_choices and value not in (None, ""):
        labels = {str(k): str(v) for k, v in field.choices}
        if str(value) in labels:
            return labels[str(value)]
    return _display(value)


def report_conflict(forms_, what):
    """Tell the user that ``what`` changed since they opened it, field by field (theirs -> yours).

    Adds a non-field error to the first form and moves every form's hidden version(s) to the stored ones,
    so that submitting the (unchanged) form again saves the user's values over the others' knowingly.

    Parameters
    ----------
    forms_ : list of VersionedFormMixin
        Bound, valid forms of one page.
    what : str
        What the page edits, e.g. "this exam".
    """
    differences, gone = [], False
    for form in forms_:
        stored = form.stored_values()
        if stored is None:
            gone = gone or bool(form.instance.pk)
            continue
        for name, theirs in stored.items():
            yours, field = form.cleaned_data.get(name), form.fields[name]
            if _display(theirs) != _display(yours):
                label = field.label or name.replace("_", " ").capitalize()
                differences.append(f"{label}: {_shown(field, theirs)} -> {_shown(field, yours)}")
        versions = form.stored_versions()
        if versions:
            form.data = form.data.copy()
            for name, version in versions.items():
                form.data[form.add_prefix(name)] = str(version)
    if gone:
        forms_[0].add_error(None, f"Not saved: {what} was deleted by someone else since you opened it.")
        return
    detail = "; ".join(differences) if differences else "no field differs from yours"
    forms_[0].add_error(None, f"Not saved: someone else saved {what} since you opened it. Their values -> yours: "
                              f"{detail}. Save again to replace their values with yours, or cancel to keep theirs.")


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


class ExamForm(VersionedFormMixin, forms.ModelForm):
    split = forms.ChoiceField(label="Split", choices=[("", "unassigned")] + list(Split.choices), required=False,
                              help_text="Split in the project's main cohort (fixed once a model was trained on it).")
    version_fields = ("version", "split_version")

    class Meta:
        model = Exam
        fields = ["exam_date", "age_at_exam", "region", "study_uid", "series_uid", "scanner_model", "kvp",
                  "slice_thickness_mm", "contrast"]
        widgets = {"exam_date": forms.DateInput(attrs={"type": "date"})}

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.patient = patient
        self.instance.patient = patient
        self._add_version_field()
        # The split lives on the cohort membership, which has its own version (0: not a member).
        self.fields["split_version"] = forms.IntegerField(widget=forms.HiddenInput, min_value=0, required=False)
        if self.instance.pk:
            member = self._member()
            self.fields["split"].initial = member.split if member else ""
            self.fields["split_version"].initial = member.version if member else 0

    def _member(self):
        return CohortMember.objects.filter(exam=self.instance, cohort__name="main",
                                           cohort__project=self.patient.project).first()

    def stored_values(self):
        values = super().stored_values()
        if values is not None:
            member = self._member()
            values["split"] = member.split if member else ""
        return values

    def stored_versions(self):
        versions = super().stored_versions()
        if versions:
            member = self._member()
            versions["split_version"] = member.version if member else 0
        return versions

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
        split = self.cleaned_data.get("split", "")
        split_version = self.cleaned_data.get("split_version")
        if commit and (split or split_version or self.instance.cohort_memberships.exists()):
            set_split(exam, split, expected_version=split_version)
        return exam


class QCTForm(VersionedFormMixin, forms.ModelForm):
    class Meta:
        model = QCTResult
        fields = ["bmd_l1", "bmd_l2", "bmd_l3", "levels_note"]
        help_texts = {"levels_note": "Which vertebrae were used and why, e.g. 'L2 fractured, replaced by L3'."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # 0: the exam had no QCT values when the form was opened (a concurrent first entry is a conflict).
        self.fields["version"] = forms.IntegerField(widget=forms.HiddenInput, min_value=0, required=False,
                                                    initial=self.instance.version if self.instance.pk else 0)

    def stored_values(self):
        if self.instance.pk:
            return super().stored_values()
        # Opened without QCT values: compare with the values someone else entered meanwhile, if any.
        current = self._entered_meanwhile()
        return {} if current is None else {name: getattr(current, name) for name in self.fields if name != "version"}

    def stored_versions(self):
        if self.instance.pk:
            return super().stored_versions()
        current = self._entered_meanwhile()
        return {"version": current.version} if current else {}

    def _entered_meanwhile(self):
        exam_id = self.instance.exam_id
        return QCTResult.objects.filter(exam_id=exam_id).first() if exam_id else None

    def save(self, commit=True):
        if not self.instance.pk and self.cleaned_data.get("version"):
            # Opened empty, then told that someone else entered values: saving again goes over theirs.
            current = self._entered_meanwhile()
            if current is not None:
                self.instance.pk, self.instance._state.adding = current.pk, False
        return super().save(commit=commit)

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


class ExclusionFlagForm(VersionedFormMixin, forms.ModelForm):
    class Meta:
        model = ExclusionFlag
        fields = ["reason", "exam", "note"]
        labels = {"reason": "Exclusion reason", "exam": "Applies to", "note": "Note"}

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.patient = patient
        self.fields["exam"].queryset = patient.exams.all()
        self.fields["exam"].required = False
        self.fields["exam"].empty_label = "the whole patient"
        # The patient page shows these fields in one row without <label> elements: name them for assistive
        # technology as well.
        for name in ("reason", "exam", "note"):
            self.fields[name].widget.attrs.setdefault("aria-label", self.fields[name].label)
        self._add_version_field()


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


class MembershipForm(forms.Form):
    """Add an existing user to the project by user name.

    The answer is the same whether or not an account of that name exists, so the form cannot be used to
    find out which user names the site has (see :func:`add_member`).
    """

    username = forms.CharField(label="User name", max_length=150)
    role = forms.ChoiceField(label="Role", choices=Membership._meta.get_field("role").choices)

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project

    def add_member(self):
        """Add the user if the account exists and is not yet a member; returns the message to show.

        An existing member keeps their role (it is changed in the member list, which shows them anyway).
        """
        name, role = self.cleaned_data["username"].strip(), self.cleaned_data["role"]
        user = get_user_model().objects.filter(username=name, is_active=True).first()
        if user is not None:
            try:
                with transaction.atomic():
                    Membership.objects.get_or_create(project=self.project, user=user, defaults={"role": role})
            except IntegrityError:
                pass  # added by someone else at the same moment: the outcome is the same
        return (f"If an account named {name!r} exists and was not yet a member, it has been added as "
                f"{Membership(role=role).get_role_display()}.")


class MembershipRoleForm(VersionedFormMixin, forms.ModelForm):
    """Change a member's role; the form carries the membership's version."""

    class Meta:
        model = Membership
        fields = ["role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].label = f"Role of {self.instance.user.username}"
        # Shown in a table row without a <label>: the select names itself.
        self.fields["role"].widget.attrs["aria-label"] = self.fields["role"].label
        self._add_version_field()


def save_versioned(form, what):
    """Save one versioned form; on a conflict the form gets the message (see :func:`report_conflict`).

    Returns
    -------
    Model instance or None
        None when the save was refused (the form then carries the reason).
    """
    try:
        with transaction.atomic():
            return form.save()
    except EditConflict:
        report_conflict([form], what)
        return None


def save_exam_forms(exam_form, qct_form):
    """Save an exam with its QCT values and split in one transaction.

    Returns
    -------
    (Exam, QCTResult) or None
        None when nothing was saved; the forms then carry the reason: someone else saved the exam since it was
        opened (what differs, theirs -> yours), the patient already has an exam that day (also when two
        people add it at the same moment), or the split of a frozen cohort would change.
    """
    adding = [(form.instance, form.instance.pk is None) for form in (exam_form, qct_form)]
    try:
        with transaction.atomic():
            exam = exam_form.save()
            qct_form.instance.exam = exam
            qct = qct_form.save()
        return exam, qct
    except EditConflict:
        _forget_unsaved(adding)
        report_conflict([exam_form, qct_form], "this exam")
    except FrozenSplitError as exc:
        _forget_unsaved(adding)
        exam_form.add_error("split", f"{FrozenSplitError.MESSAGE[0].upper()}{FrozenSplitError.MESSAGE[1:]}: "
                                     f"{exc.cohort.name!r} was used to train a model (it is "
                                     f"{exc.old or 'not a member'}). Other values can still be corrected.")
    except IntegrityError:
        _forget_unsaved(adding)
        if adding[0][1]:
            exam_form.add_error("exam_date", "This patient already has an exam on that date.")
        else:
            report_conflict([exam_form, qct_form], "this exam")
    return None


def _forget_unsaved(adding):
    """After a rollback, objects that were being created are not stored: make them new again."""
    for instance, was_new in adding:
        if was_new:
            instance.pk, instance._state.adding = None, True


class CSVUploadForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV, one row per patient exam; see the column list below.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.MAX_CSV_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(f"The file is larger than {limit // 1024 ** 2} MB (MAX_CSV_UPLOAD_BYTES); "
                                        "split it or use the import_qct command.")
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

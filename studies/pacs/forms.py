"""PACS forms. The connection's secret is write-only: never rendered back; blank on edit keeps the old one."""

from django import forms

from studies import validation
from studies.models import Cohort, Exam

from .client import PacsError, check_base_url, check_pacs_address
from .models import PacsAuth, PacsConnection
from .uids import is_route_uid


def clean_pacs_url(value: str) -> str:
    """A DICOMweb root URL fit to be stored: well formed, and its host resolved to allowed addresses only
    (the client checks again at each connection: DNS may answer differently later)."""
    try:
        url = check_base_url(value.strip())
        check_pacs_address(url)
        return url
    except PacsError as exc:
        raise forms.ValidationError(str(exc)) from None


class PacsConnectionAdminForm(forms.ModelForm):
    """The Django admin's form for connections: the same URL check as the PACS pages."""

    base_url = forms.URLField(label="DICOMweb root URL", max_length=500, assume_scheme="https")

    class Meta:
        model = PacsConnection
        exclude = ["secret"]

    def clean_base_url(self):
        return clean_pacs_url(self.cleaned_data["base_url"])


class PacsConnectionForm(forms.ModelForm):
    base_url = forms.URLField(label="DICOMweb root URL", max_length=500, assume_scheme="https",
                              help_text="e.g. https://pacs.example.org/dicom-web (QIDO, WADO and STOW below it)")
    secret = forms.CharField(
        label="Password or token", required=False, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored on the server and never shown again. Leave blank to keep the current one.")
    clear_secret = forms.BooleanField(required=False, label="Remove the stored password/token")

    class Meta:
        model = PacsConnection
        fields = ["name", "base_url", "auth", "username", "secret", "connect_timeout_s", "read_timeout_s",
                  "max_retries"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Never put the stored secret into the form, not even as initial data.
        self.initial.pop("secret", None)
        self._stored_secret = self.instance.secret if self.instance.pk else ""
        if not self._stored_secret:
            del self.fields["clear_secret"]

    def clean_base_url(self):
        return clean_pacs_url(self.cleaned_data["base_url"])

    def clean(self):
        data = super().clean()
        secret = data.get("secret") or ("" if data.get("clear_secret") else self._stored_secret)
        data["secret"] = secret
        auth = data.get("auth")
        if auth == PacsAuth.BASIC and not data.get("username"):
            self.add_error("username", "Basic authentication needs a user name.")
        if auth in (PacsAuth.BASIC, PacsAuth.BEARER) and not secret:
            self.add_error("secret", "This authentication needs a password or token.")
        for name in ("connect_timeout_s", "read_timeout_s"):
            value = data.get(name)
            if value is not None and not 0 < value <= 3600:
                self.add_error(name, "Between 0 and 3600 seconds.")
        if (data.get("max_retries") or 0) > 10:
            self.add_error("max_retries", "At most 10 retries.")
        return data

    def save(self, commit=True):
        self.instance.secret = self.cleaned_data["secret"]
        return super().save(commit=commit)


class SearchForm(forms.Form):
    connection = forms.ModelChoiceField(PacsConnection.objects.all(), empty_label=None)
    patient_id = forms.CharField(required=False, max_length=64, label="Patient ID (in the PACS)")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    modality = forms.CharField(required=False, max_length=16, initial="CT")

    def clean(self):
        data = super().clean()
        if not (data.get("patient_id") or data.get("date_from") or data.get("date_to")):
            raise forms.ValidationError("Give a patient id or a date range: a PACS holds too much to list.")
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data


def _exam_choices(project):
    return Exam.objects.filter(patient__project=project).select_related("patient").order_by(
        "patient__pseudonym", "exam_date")


class LinkExamForm(forms.Form):
    study_uid = forms.CharField(max_length=64, widget=forms.HiddenInput)
    exam = forms.ModelChoiceField(Exam.objects.none(), widget=forms.Select(attrs={"aria-label": "Registry exam"}))

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["exam"].queryset = _exam_choices(project)

    def clean_study_uid(self):
        # The exam form's rule for the same field: what is linked here is stored in the registry.
        value = self.cleaned_data["study_uid"].strip()
        try:
            validation.check_uid(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return value


class SelectionForm(forms.Form):
    """The series to pull: the automatic choice is preselected; picking another is an override."""

    series_uid = forms.ChoiceField(widget=forms.RadioSelect, label="Series")
    exam = forms.ModelChoiceField(Exam.objects.none(), required=False, help_text="Registry exam to link it to.")

    def __init__(self, *args, project, selection, **kwargs):
        super().__init__(*args, **kwargs)
        self.selection = selection
        self.fields["series_uid"].choices = [
            (c.series_uid, f"{c.label}: {selection.reasons.get(c.series_uid, '')}") for c in selection.candidates]
        if selection.chosen is not None:
            self.fields["series_uid"].initial = selection.chosen.series_uid
        self.fields["exam"].queryset = _exam_choices(project)

    @property
    def is_override(self):
        chosen = self.selection.chosen
        return chosen is None or self.cleaned_data["series_uid"] != chosen.series_uid


class CohortPullForm(forms.Form):
    cohort = forms.ModelChoiceField(Cohort.objects.none(), empty_label=None)
    connection = forms.ModelChoiceField(PacsConnection.objects.all(), empty_label=None)

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cohort"].queryset = project.cohorts.order_by("name")


class LocalImportForm(forms.Form):
    file = forms.FileField(required=False, label="Zip of DICOM files")
    folder = forms.CharField(required=False, max_length=500, label="Folder on the server",
                             help_text="Site admins only: a folder the server can read.")
    exam = forms.ModelChoiceField(Exam.objects.none(), required=False)
    series_uid = forms.CharField(required=False, max_length=64, label="Series UID (override the selection)")

    def clean_series_uid(self):
        value = self.cleaned_data["series_uid"].strip()
        if value and not is_route_uid(value):
            raise forms.ValidationError(f"SeriesInstanceUID (0020,000E) {value!r} is not a DICOM UID (digits and "
                                        "dots, at most 64 characters)")
        return value

    def __init__(self, *args, project, allow_folder, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["exam"].queryset = _exam_choices(project)
        if not allow_folder:
            del self.fields["folder"]

    def clean(self):
        data = super().clean()
        upload, folder = data.get("file"), (data.get("folder") or "").strip()
        if bool(upload) == bool(folder):
            raise forms.ValidationError("Give either a zip file or a folder.")
        if upload and not upload.name.lower().endswith(".zip"):
            self.add_error("file", "Upload a .zip of DICOM files.")
        return data

from django import forms

from analysis.segmentation.levels import LEVEL_NAMES

from .models import Decision

LEVEL_CHOICES = [("", "unnamed")] + [(name, name) for name in LEVEL_NAMES]
OPERATIONS = ["name", "shift", "rename", "unusable", "usable", "comment", *Decision.values]


class CaseActionForm(forms.Form):
    """One review action on a reading, with the version the reader had open."""

    operation = forms.ChoiceField(choices=[(o, o) for o in OPERATIONS])
    reading = forms.IntegerField(required=False)
    version = forms.IntegerField(required=False, min_value=1)
    index = forms.IntegerField(required=False, min_value=1)
    level = forms.ChoiceField(choices=LEVEL_CHOICES, required=False)
    delta = forms.TypedChoiceField(choices=[("1", "down"), ("-1", "up")], coerce=int, required=False)
    text = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    # With "resegment": the segmenter to run (empty: the project's default; see studies.review.resegment).
    segmenter = forms.CharField(required=False, max_length=100)

    def clean(self):
        data = super().clean()
        op = data.get("operation")
        if op in ("name", "rename", "unusable", "usable") and not data.get("index"):
            raise forms.ValidationError("choose a segment")
        if op == "name" and not data.get("level"):
            raise forms.ValidationError("choose the level of the segment")
        if op == "shift" and data.get("delta") not in (1, -1):
            raise forms.ValidationError("shift up or down")
        if op != "comment" and not data.get("version"):
            raise forms.ValidationError("the version you opened is missing; reload the case")
        return data


class AssignForm(forms.Form):
    double_read_share = forms.FloatField(min_value=0.0, max_value=1.0, initial=0.0,
                                         help_text="share of cases read by two readers (0-1)")
    seed = forms.IntegerField(initial=0)


class ResegmentForm(forms.Form):
    """Request re-segmentation of a case again (after a failed or cancelled job)."""

    segmenter = forms.CharField(required=False, max_length=100)

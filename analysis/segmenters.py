"""A project's segmenters as its pages and jobs see them: which can be chosen, training data the site offers
for the network, and the comparison of two segmenters on the project's reviewed cases.

The thin ORM layer over :mod:`analysis.segmentation.network` (training, registry) and
:mod:`analysis.segmentation.comparison` (the numbers); the pages in :mod:`analysis.segmenter_views` and the jobs
in :mod:`analysis.tasks` call these functions.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from .models import MeasurementRun, SegmenterComparison, SegmenterVersion

# A configuration small enough to train on CPU in minutes (a trial; the network package's defaults are for
# a GPU worker): 3 stages of 4-16 channels on a 4 mm grid, 32^3 windows, 10 steps per epoch.
CPU_TRIAL = {
    "architecture": {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "blocks": [1, 1, 1]},
    "preprocessing": {"orientation": "LPS", "spacing_mm": [4.0, 4.0, 4.0], "hu_window": [-1000.0, 1500.0]},
    "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2, "threshold": 0.5},
    "training": {"steps_per_epoch": 10, "batch_size": 2, "learning_rate": 1e-3, "crop_size": [32, 32, 32]},
}
CONFIGURATIONS = {"default": {}, "cpu_trial": CPU_TRIAL}

PHANTOM_LEVELS = ["T10", "T11", "T12", "L1", "L2"]


class SegmenterChoiceError(ValueError):
    """A segmenter name that the project does not have (or another bad choice; the message says why)."""


# -- which segmenters a project has -------------------------------------------------------------------------
def default_segmenter(project):
    """The name the project's default stands for now: its promoted version, else the rule-based segmenter."""
    from .segmentation.network.registry import RULE_BASED

    promoted = SegmenterVersion.objects.filter(project=project, promoted=True).values_list("name", flat=True).first()
    return promoted or RULE_BASED


def segmenter_choices(project, *, with_default=True):
    """``[(value, label)]``: the project default (value ""), the rule-based segmenter and the versions.

    Each segmenter is offered once: while the default is the rule-based segmenter, the default entry stands
    for it and it is not listed again by name."""
    from .segmentation.network.registry import RULE_BASED

    choices = []
    default = default_segmenter(project) if with_default else None
    if default == RULE_BASED:
        choices.append(("", "project default (rule-based, anatomy rules)"))
    else:
        if default:
            choices.append(("", f"project default ({default})"))
        choices.append((RULE_BASED, "rule-based (anatomy rules)"))
    for name, promoted in SegmenterVersion.objects.filter(project=project).values_list("name", "promoted"):
        choices.append((name, f"{name} (promoted)" if promoted else name))
    return choices


def resolve_name(project, choice):
    """The segmenter name a choice stands for ("" is the project default); refuses names not the project's."""
    from .segmentation.network.registry import RULE_BASED, RULE_BASED_NAMES

    choice = (choice or "").strip()
    if not choice:
        return default_segmenter(project)
    if choice in RULE_BASED_NAMES:
        return RULE_BASED
    if SegmenterVersion.objects.filter(project=project, name=choice).exists():
        return choice
    raise SegmenterChoiceError(f"no segmenter named {choice!r} in this project")


def queue_and_device(*names):
    """A job running a network goes to the ``gpu`` queue (CUDA where the worker has it); the rule-based
    segmenter runs on CPU on the default queue."""
    from .segmentation.network.registry import RULE_BASED

    return ("default", "cpu") if all(n == RULE_BASED for n in names) else ("gpu", "cuda")


def submit_measurement(project, exam_id, name, *, user=None, requested_by=None):
    """Start the exam's segment-and-measure job (``analysis.measure_exam``) with the segmenter ``name`` (a
    name :func:`resolve_name` gave), on the queue and device it needs, with the site's code version.

    ``user``: checked for the role that starting the job needs (``PermissionDenied``); ``requested_by``:
    named as the job's author without that check (a reader's re-segmentation, which the review's own role
    check governs)."""
    from studies import jobs

    from .modeling.versions import code_version

    queue, device = queue_and_device(name)
    author = user or requested_by
    return jobs.submit("analysis.measure_exam", project=project, user=user, queue=queue, exam_id=exam_id,
                       segmenter=name, device=device, code_version=code_version(),
                       user_id=author.pk if author is not None else None)


def use_rule_based_default(project, user=None):
    """Demote the project's promoted version: the rule-based segmenter is the default again (audited)."""
    from studies.audit import acting_as

    with transaction.atomic(), acting_as(user):
        for version in SegmenterVersion.objects.select_for_update().filter(project=project, promoted=True):
            version.promoted = False
            version.save(update_fields=["promoted"])


# -- what a version was trained on ----------------------------------------------------------------------------
def training_summary(training_data):
    """"3 phantoms, 1 reviewed case; held out: 1 phantom" from a version's ``training_data``."""
    names = {"phantom": "phantom", "nifti": "label map", "measurement_run": "reviewed case"}

    def count(sources):
        counts = {}
        for source in sources or []:
            kind = names.get(source.get("kind"), source.get("kind") or "?")
            counts[kind] = counts.get(kind, 0) + 1
        return ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items()) or "none"

    return f"{count(training_data.get('train'))}; held out: {count(training_data.get('held_out'))}"


def last_epoch(version):
    """The last epoch entry of a version's training log, with its held-out Dice as ``dice_rows``
    ([(level, Dice)] head to foot), or None."""
    from .segmentation.levels import VERSE_LABEL

    epochs = [e for e in version.training_log or [] if e.get("event") == "epoch"]
    if not epochs:
        return None
    entry = dict(epochs[-1])
    entry["dice_rows"] = sorted((entry.get("held_out_dice") or {}).items(), key=lambda kv: VERSE_LABEL.get(kv[0], 99))
    return entry


def phantom_sources(n, *, seed=0, osteoporotic=False, held_out=False):
    """``n`` phantom training sources (:func:`analysis.segmentation.network.training.load_source`).

    Seeds differ per phantom; held-out phantoms use seeds from 1000 on, are stored RAS (the network must not
    depend on the file's orientation) and have osteoporotic marrow. With ``osteoporotic`` every other
    training phantom has half the default trabecular HU.
    """
    sources = []
    for i in range(n):
        source = {"kind": "phantom", "levels": PHANTOM_LEVELS, "seed": seed + i + (1000 if held_out else 0),
                  "spacing": [3.0, 3.0, 3.0]}
        if held_out:
            source.update({"orientation": "RAS", "trabecular_scale": 0.5})
        elif osteoporotic and i % 2 == 1:
            source["trabecular_scale"] = 0.5
        sources.append(source)
    return sources


def label_map_folders():
    """Imported label maps the site offers for training: sub-folders of ``SEGMENTER_LABEL_MAPS`` holding
    ``ct.nii.gz`` and ``labels-verse.nii.gz`` or ``labels-totalsegmentator.nii.gz`` (optional ``body.nii.gz``:
    TotalSegmentator's vertebral body mask). Returns ``{folder name: source}``; paths never come from a form."""
    root = Path(settings.SEGMENTER_LABEL_MAPS)
    found = {}
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        ct = folder / "ct.nii.gz"
        for fmt in ("verse", "totalsegmentator"):
            labels = folder / f"labels-{fmt}.nii.gz"
            if ct.is_file() and labels.is_file():
                source = {"kind": "nifti", "name": folder.name, "ct": str(ct), "labels": str(labels), "format": fmt}
                if (folder / "body.nii.gz").is_file():
                    source["body"] = str(folder / "body.nii.gz")
                found[folder.name] = source
                break
    return found


# -- reviewed cases --------------------------------------------------------------------------------------------
def reviewed_reference_runs(project):
    """The reviewed masks: the run of each case of ``project`` accepted in review now
    (:func:`studies.review.actions.reviewed_training_cases`) that has a label map, in order of exam."""
    from studies.review.actions import reviewed_training_cases

    runs = []
    for case in reviewed_training_cases(project):
        run = case.reviewed_run
        if run.labels:
            run.exam = case.exam  # fetched with its patient already
            runs.append(run)
    return sorted(runs, key=lambda run: run.exam_id)


# -- comparing two segmenters -------------------------------------------------------------------------------------
def start_comparison(project, segmenter_a, segmenter_b, *, user=None):
    """Record a comparison of two segmenters on the project's reviewed cases and submit its job.

    Raises :class:`SegmenterChoiceError` for unknown or equal segmenters or a project without reviewed cases.
    """
    from studies import jobs

    from .modeling.versions import code_version

    a, b = resolve_name(project, segmenter_a), resolve_name(project, segmenter_b)
    if a == b:
        raise SegmenterChoiceError(f"choose two different segmenters (both are {a})")
    runs = reviewed_reference_runs(project)
    if not runs:
        raise SegmenterChoiceError("this project has no reviewed cases with a label map to compare on; accept "
                                   "cases in review first")
    queue, device = queue_and_device(a, b)
    with transaction.atomic():
        comparison = SegmenterComparison.objects.create(project=project, segmenter_a=a, segmenter_b=b,
                                                        reference_runs=[r.pk for r in runs], created_by=user)
        comparison.job = jobs.submit("analysis.compare_segmenters", project=project, user=user, queue=queue,
                                     comparison_id=comparison.pk, device=device, code_version=code_version())
        comparison.save(update_fields=["job"])
    return comparison


def _label_array(field):
    """A stored NIfTI label map (a run's ``labels``) as an integer array, (z, y, x) on the stored series' grid."""
    import tempfile

    import numpy as np

    from .imaging.volume import load_nifti

    with field.open("rb") as fh, tempfile.NamedTemporaryFile(suffix=".nii.gz") as tmp:
        tmp.write(fh.read())
        tmp.flush()
        return np.asarray(load_nifti(tmp.name).array).astype(np.int64)


def _segmenter_output(segmenter, volume, device, erosion_mm):
    from .measurement import measure_segments
    from .segmentation.comparison import SegmenterOutput

    result = segmenter(volume, device=device)
    measured = measure_segments(volume, result.segment_labels, result.segments, erosion_mm=erosion_mm)
    return SegmenterOutput(segment_labels=result.segment_labels, levels={s.index: s.level for s in result.segments},
                           mean_hu={m.index: m.mean_hu for m in measured})


def run_comparison(comparison, *, device="cpu", erosion_mm=3.0, progress=None):
    """Run both segmenters on every reference case, compare them with the reviewed masks, store the result."""
    from .segmentation.comparison import compare_case, summarise
    from .segmentation.network.registry import resolve_segmenter

    report = progress or (lambda fraction, message="": None)
    project = comparison.project
    segmenters = [resolve_segmenter(name, project=project) for name in (comparison.segmenter_a,
                                                                          comparison.segmenter_b)]
    runs = list(MeasurementRun.objects.filter(pk__in=comparison.reference_runs).select_related("exam__patient")
                .order_by("exam_id"))
    cases = []
    for i, run in enumerate(runs):
        report(i / max(1, len(runs)), f"case {i + 1} of {len(runs)}: exam {run.exam_id}")
        stored = run.exam.stored_series.filter(series_uid=run.series_uid).first()
        if stored is None:
            raise ValueError(f"reviewed run {run.pk} of exam {run.exam_id}: its series {run.series_uid} is no "
                             "longer stored")
        volume = stored.load_volume()
        reference = _label_array(run.labels)
        a, b = (_segmenter_output(s, volume, device, erosion_mm) for s in segmenters)
        row = compare_case(f"{run.exam.patient.pseudonym} {run.exam.exam_date:%Y-%m-%d}", reference, a, b)
        row.update({"exam_id": run.exam_id, "reference_run": run.pk})
        cases.append(row)
    results = summarise(cases)
    results["cases"] = cases
    SegmenterComparison.objects.filter(pk=comparison.pk, results__isnull=True).update(
        results=results, n_cases=len(cases))
    report(1.0, f"{len(cases)} cases compared")
    return results

"""A reader's correction of a body mask in the case viewer becomes a new, immutable measurement run.

The viewer uploads the whole segment map (segment indices, uint8, shape (slices, rows, columns) of the stored
series, in stored slice order), gzipped. Nothing it sends is trusted: the size is limited, the shape must be
the series' shape, the indices must be segments of the run, and the ROI and HU are measured again here, from
the stored CT, with the project's measurement code (:func:`analysis.measurement.measure_segmentation`: the
trabecular ROI is the edited body mask eroded as usual). The run the reader edited stays as it was; the new
one keeps its source, so the exam's features use it from now on (it is the newest run of that source; once
the case is accepted it is the exam's reviewed run, :func:`analysis.modeling.records.reviewed_run_ids`), and
model versions built on the old run show stale (:mod:`analysis.modeling.staleness`). It becomes the run under
review of the case, so a later relabel or accept builds on the edited voxels.

Saving goes through the reading's optimistic version (:func:`.actions._save_reading`): a reader whose page is
older than the case is told what changed and nothing is saved. Every save is audited.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
from auditlog.models import LogEntry
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from analysis.measurement import (
    CONTRAST_EXAM,
    DUPLICATED_LEVEL,
    HU_OUTLIER,
    LOW_LEVEL_CONFIDENCE,
    MISSING_LEVEL,
    ROI_TOO_SMALL,
    TOUCHES_VOLUME_EDGE,
    case_flags,
    measure_segmentation,
    segments_json,
)
from analysis.models import LevelMeasurement, MeasurementRun
from analysis.segmentation.levels import VERSE_LABEL, BodySegment

from . import actions
from .models import ReadingKind, ReviewCase, ReviewEvent
from .relabel import UNUSABLE_BY_READER, _nifti_bytes
from .segments import run_segments, segment_index_volume

# Flags the measurement sets (they are measured again on the edited mask, never carried over).
MEASURED_FLAGS = frozenset({ROI_TOO_SMALL, TOUCHES_VOLUME_EDGE, CONTRAST_EXAM, HU_OUTLIER, DUPLICATED_LEVEL,
                            LOW_LEVEL_CONFIDENCE, MISSING_LEVEL})
MASK_EDITED = "mask_edited"


class MaskEditError(ValueError):
    """The uploaded mask cannot be used (the message says why); nothing was saved."""


def max_upload_bytes():
    """The largest gzipped segment map accepted: the site's limit on a request body without files."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def decode_segment_map(payload: bytes, shape, allowed) -> np.ndarray:
    """The uint8 segment map of shape ``shape`` from gzipped ``payload``.

    Raises
    ------
    MaskEditError
        Too large, not gzip, not exactly ``prod(shape)`` voxels, or holding an index outside ``allowed``
        (0 is always allowed).
    """
    limit = max_upload_bytes()
    if len(payload) > limit:
        raise MaskEditError(f"the edited mask is {len(payload)} bytes gzipped; the limit is {limit} bytes")
    expected = int(np.prod(shape))
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip only
    try:
        raw = inflater.decompress(payload, expected + 1)  # a gzip bomb stops one byte past the expected size
    except zlib.error as exc:
        raise MaskEditError(f"the edited mask is not gzip data ({exc})") from None
    if len(raw) > expected or inflater.unconsumed_tail:
        raise MaskEditError(f"the edited mask holds more than the series' {expected} voxels "
                            f"(shape {tuple(shape)} expected)")
    if not inflater.eof:
        raise MaskEditError("the edited mask's gzip data is truncated")
    if len(raw) != expected:
        raise MaskEditError(f"the edited mask holds {len(raw)} voxels; the series has {expected} "
                            f"(shape {tuple(shape)})")
    labels = np.frombuffer(raw, dtype=np.uint8).reshape(tuple(shape))
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    unknown = sorted(set(int(v) for v in present) - {0} - set(int(i) for i in allowed))
    if unknown:
        raise MaskEditError(f"the edited mask holds segment indices {unknown} that the run does not have "
                            f"(its segments: {sorted(allowed)})")
    return labels


def voxel_changes(before: np.ndarray, after: np.ndarray, indices) -> dict:
    """``{index: (voxels added, voxels removed)}`` for the segments whose voxels changed."""
    changed = before != after
    old, new = before[changed], after[changed]
    out = {}
    for index in indices:
        added, removed = int(np.count_nonzero(new == index)), int(np.count_nonzero(old == index))
        if added or removed:
            out[int(index)] = (added, removed)
    return out


def _summary(changes, names):
    return "; ".join(f"{names.get(i) or f'segment {i}'} +{a} / -{r} voxels" for i, (a, r) in sorted(changes.items()))


def save_mask_edit(case, reading, opened_version, opened_run_id, payload, *, user):
    """Measure the edited segment map ``payload`` (gzip) of ``case`` and store it as a new run.

    Parameters
    ----------
    case : ReviewCase
    reading : Reading
        The reader's working reading (the optimistic version lives there).
    opened_version : int
        The reading's version when the page was opened.
    opened_run_id : int
        The run whose mask the reader edited (the case's run under review when the page was opened).
    payload : bytes
        The gzipped uint8 segment map, stored slice order.
    user : User

    Returns
    -------
    MeasurementRun
        The new run, now the case's run under review.

    Raises
    ------
    MaskEditError
        Bad upload, nothing changed, or the case cannot take a mask edit now.
    actions.EditConflict
        The case changed since the page was opened; nothing was saved.
    """
    if reading.kind in (ReadingKind.FIRST, ReadingKind.SECOND):
        raise MaskEditError("masks are edited in a single reading or in adjudication: in blinded double reading "
                            "an edit would change the run the other reader sees")
    base = case.base_run
    if base.pk != int(opened_run_id):
        raise _conflict(case, reading, opened_version,
                        f"the run under review is now run {base.pk}; you edited run {opened_run_id}")
    segments = run_segments(base)
    try:
        index_volume = segment_index_volume(base, segments)
    except ValueError as exc:
        raise MaskEditError(str(exc)) from None
    before = np.asarray(index_volume.array, dtype=np.uint8)
    indices = [s["index"] for s in segments]
    after = decode_segment_map(payload, before.shape, indices)
    changes = voxel_changes(before, after, indices)
    if not changes:
        raise MaskEditError("the mask is unchanged: nothing to save")

    stored = case.exam.stored_series.filter(series_uid=base.series_uid).first() if base.series_uid else None
    if stored is None:
        raise MaskEditError(f"the stored series {base.series_uid or '(none)'} of run {base.pk} is gone: "
                            "the edited mask cannot be measured")
    volume = stored.load_volume()
    if tuple(volume.shape) != tuple(after.shape):
        raise MaskEditError(f"the stored series has shape {tuple(volume.shape)}, the run's segment map "
                            f"{tuple(after.shape)}")

    names = {s["index"]: s.get("level") for s in segments}
    body_segments = [BodySegment(index=s["index"], level=s.get("level"), confidence=s.get("confidence"),
                                 flags=[f for f in s.get("flags") or [] if f not in MEASURED_FLAGS])
                     for s in segments]
    lut = np.zeros(256, dtype=np.uint8)
    for s in segments:
        if s.get("level"):
            lut[s["index"]] = VERSE_LABEL[s["level"]]
    verse_labels = lut[after]
    parameters = dict(base.parameters or {})
    erosion_mm = float(parameters.get("erosion_mm", 3.0))
    contrast = bool((stored.meta or {}).get("contrast") or case.exam.contrast)
    base_flags = [f for f in base.flags or [] if f not in MEASURED_FLAGS and f != MASK_EDITED]
    notes = [n for n in base.level_notes]
    result = measure_segmentation(volume, verse_labels, after, body_segments,
                                  level_confidence=parameters.get("level_confidence"),
                                  segmentation_flags=base_flags, notes=notes, erosion_mm=erosion_mm,
                                  contrast=contrast)
    unusable_levels = {m.level for m in base.levels.all() if UNUSABLE_BY_READER in (m.flags or [])}
    summary = _summary(changes, names)
    editor = getattr(user, "username", "")
    parameters.update({
        "erosion_mm": erosion_mm,
        "level_confidence": result.level_confidence,
        "notes": [*result.notes, f"mask edited by {editor} in review (base run {base.pk}): {summary}"],
        # A reader's work (provenance); whether it is the exam's reviewed run depends on the case being accepted.
        "reviewed": True,
        "mask_edit": {"base_run": base.pk, "case": case.pk, "editor": editor, "summary": summary,
                      "segments": {str(i): {"added": a, "removed": r} for i, (a, r) in sorted(changes.items())},
                      "upload_sha256": hashlib.sha256(payload).hexdigest()},
    })
    with transaction.atomic():
        locked = ReviewCase.objects.select_for_update().get(pk=case.pk)
        if locked.base_run_id != base.pk:
            raise _conflict(locked, reading, opened_version,
                            f"the run under review is now run {locked.base_run_id}; you edited run {base.pk}")
        new_summary = f"mask edited: {summary}"
        # Raises EditConflict (and rolls everything back) when the reading moved on since the page opened.
        actions._save_reading(reading, opened_version, user, action="mask_edit", summary=new_summary)
        run = MeasurementRun(exam=base.exam, source=base.source, segmenter_version=base.segmenter_version,
                             parameters=parameters, timings={}, code_version=base.code_version,
                             flags=sorted(set(case_flags(result.levels, result.segmentation_flags)) | {MASK_EDITED}),
                             series_uid=base.series_uid, created_by=user,
                             segments=[{**s, "flags": s["flags"] + ([UNUSABLE_BY_READER] if names.get(s["index"])
                                                                    in unusable_levels
                                                                    and UNUSABLE_BY_READER not in s["flags"] else [])}
                                       for s in segments_json(result.segments)])
        stem = f"exam{base.exam_id}-mask-edit-of-run{base.pk}"
        run.labels.save(f"{stem}.nii.gz", ContentFile(_nifti_bytes(index_volume, verse_labels)), save=False)
        run.segment_labels.save(f"{stem}-segments.nii.gz", ContentFile(_nifti_bytes(index_volume, after)),
                                save=False)
        run.save()
        LevelMeasurement.objects.bulk_create([
            LevelMeasurement.from_measured(run, m, [UNUSABLE_BY_READER] if m.level in unusable_levels else [])
            for m in result.levels.values()])
        ReviewCase.objects.filter(pk=case.pk).update(base_run=run)
        case.base_run = run
        LogEntry.objects.log_create(case, action=LogEntry.Action.UPDATE, actor=user,
                                    changes={"base_run": [str(base.pk), str(run.pk)], "mask_edit": ["", summary]},
                                    additional_data=case.get_additional_data())
        ReviewEvent.objects.create(case=case, reading=reading, user=user, action="mask_run",
                                   summary=f"measurement run {run.pk} created from the edited mask of run {base.pk}",
                                   version=reading.version)
    return run


def _conflict(case, reading, opened_version, what):
    from .models import Reading

    current = Reading.objects.get(pk=reading.pk)
    events = list(ReviewEvent.objects.filter(case=case, version__gt=opened_version).select_related("user"))
    return actions.EditConflict(current, opened_version, events or [ReviewEvent(case=case, summary=what)])

"""An accepted review becomes a new, immutable measurement run: the same segments and voxels with the
reader's level names. Nothing is segmented or measured again; the per-level values are re-keyed.

The new run keeps the base run's ``source``, so the exam's features (the latest run of a source, see
:func:`analysis.modeling.records.chosen_runs`) use it from now on. Levels named by a reader carry confidence
1.0 and lose the ``low_level_confidence`` flag; vertebrae the reader marked unusable carry
``UNUSABLE_BY_READER``, which keeps them out of model features.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction

from analysis.models import LevelMeasurement, MeasurementRun
from analysis.segmentation.levels import VERSE_LABEL

from .segments import run_segments, segment_index_volume

UNUSABLE_BY_READER = "unusable_by_reader"
# Flags about the automatic naming that a reader's naming settles.
NAMING_FLAGS = frozenset({"low_level_confidence"})
CASE_NAMING_FLAGS = frozenset({"low_confidence", "no_anchor", "level_disagreement", "low_level_confidence"})


def level_map_of(run, segments=None):
    """``{index: level or None}`` of a run."""
    return {s["index"]: s.get("level") for s in (segments if segments is not None else run_segments(run))}


def changes_anything(run, level_map, unusable):
    """Whether accepting ``level_map`` and ``unusable`` on ``run`` needs a new run."""
    segments = run_segments(run)
    if level_map_of(run, segments) != level_map or unusable:
        return True
    # Confirming uncertain names is a change too: they become usable features.
    return any(s.get("level") and NAMING_FLAGS & set(s.get("flags") or ()) for s in segments)


def _nifti_bytes(volume, array):
    from analysis.imaging.volume import save_nifti

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.nii.gz"
        save_nifti(volume.with_array(array), path, dtype="uint8")
        return path.read_bytes()


def create_reviewed_run(base, level_map, unusable, *, user, case_id=None):
    """The new run of ``base`` with ``level_map`` ({index: level or None}) and ``unusable`` (indices)."""
    segments = run_segments(base)
    by_index = {s["index"]: s for s in segments}
    unusable = sorted(int(i) for i in unusable)
    measured = {m.level: m for m in base.levels.all()}
    index_volume = segment_index_volume(base, segments) if base.labels else None

    levels = []
    for index, level in sorted(level_map.items()):
        if level is None:
            continue
        segment = by_index[index]
        old = measured.get(segment.get("level")) if segment.get("level") else None
        flags = [f for f in (old.flags if old else segment.get("flags") or []) if f not in NAMING_FLAGS]
        if index in unusable:
            flags.append(UNUSABLE_BY_READER)
        source = old or segment
        get = (lambda key: getattr(source, key)) if old else (lambda key: source.get(key))
        levels.append(LevelMeasurement(level=level, mean_hu=get("mean_hu"), median_hu=get("median_hu"),
                                       sd_hu=get("sd_hu") if old else None, roi_voxels=get("roi_voxels"),
                                       body_volume_ml=get("body_volume_ml"), centroid_mm=get("centroid_mm"),
                                       flags=flags))
    parameters = dict(base.parameters or {})
    confidence = {level: 1.0 for level in level_map.values() if level}
    parameters["level_confidence"] = confidence
    reader = getattr(user, "username", "")
    parameters["notes"] = [*(base.level_notes or []), f"levels named by {reader} in review (base run {base.pk})"]
    parameters["reviewed"] = True  # provenance; reviewed_run_ids asks the case, which may be reopened later
    parameters["review"] = {"base_run": base.pk, "case": case_id, "reader": reader,
                            "level_map": {str(k): v for k, v in sorted(level_map.items())}, "unusable": unusable}
    flags = [f for f in (base.flags or []) if f not in CASE_NAMING_FLAGS] + ["reviewed"]
    extra = {}
    if base.segments:
        extra["segments"] = [{**{k: v for k, v in s.items() if k not in ("rgb", "sd_hu")},
                              "level": level_map.get(s["index"]),
                              "confidence": 1.0 if level_map.get(s["index"]) else None,
                              "flags": ([f for f in s.get("flags") or [] if f not in NAMING_FLAGS]
                                        + ([UNUSABLE_BY_READER] if s["index"] in unusable else []))}
                             for s in segments]
    with transaction.atomic():
        run = MeasurementRun(exam=base.exam, source=base.source, segmenter_version=base.segmenter_version,
                             parameters=parameters, timings={}, flags=flags, code_version=base.code_version,
                             series_uid=base.series_uid, created_by=user, **extra)
        if base.segment_labels:
            # The segments are the same voxels: the new run points at the same (immutable) file.
            run.segment_labels.name = base.segment_labels.name
        if index_volume is not None:
            lut = np.zeros(256, dtype=np.uint8)
            for index, level in level_map.items():
                if level is not None:
                    lut[index] = VERSE_LABEL[level]
            labels = lut[np.asarray(index_volume.array)]
            run.labels.save(f"exam{base.exam_id}-review-of-run{base.pk}.nii.gz",
                            ContentFile(_nifti_bytes(index_volume, labels)), save=False)
        run.save()
        for level in levels:
            level.run = run
        LevelMeasurement.objects.bulk_create(levels)
    return run

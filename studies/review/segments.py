"""The body segments of a measurement run, as the review needs them: a list (index 1 at the head end,
counting down, each with its level name or None) and a volume of segment indices on the stored series' grid.

Runs of the image pipeline record their segments (``MeasurementRun.segments`` and ``segment_labels``, the
segments contract). Runs made before it, and runs imported from another tool, only have named levels: for
them each measured level is one segment, in cranio-caudal order, and the index volume is derived from the
VerSe label map.
"""

from __future__ import annotations

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL, level_sort_key

# Distinct colours for neighbouring segments (RGB), repeated down the spine.
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180)]


def colour_of(index):
    return PALETTE[(index - 1) % len(PALETTE)]


def run_segments(run):
    """The run's segments, head first: dicts with index, level (or None), confidence, centroid_mm, mean_hu,
    median_hu, sd_hu, roi_voxels, body_volume_ml, flags and rgb."""
    measured = {m.level: m for m in run.levels.all()}
    recorded = run.segments
    if recorded:
        segments = []
        for raw in recorded:
            segment = dict(raw)
            level = segment.get("level")
            m = measured.get(level) if level else None
            segment.setdefault("median_hu", m.median_hu if m else None)
            segment["sd_hu"] = m.sd_hu if m else segment.get("sd_hu")
            segment["flags"] = list(m.flags) if m else list(segment.get("flags") or [])
            segments.append(segment)
    else:
        confidence = (run.parameters or {}).get("level_confidence") or {}
        ordered = sorted(measured.values(), key=lambda m: level_sort_key(m.level))
        segments = [{"index": i, "level": m.level, "confidence": confidence.get(m.level),
                     "centroid_mm": m.centroid_mm, "mean_hu": m.mean_hu, "median_hu": m.median_hu,
                     "sd_hu": m.sd_hu, "roi_voxels": m.roi_voxels, "body_volume_ml": m.body_volume_ml,
                     "flags": list(m.flags)} for i, m in enumerate(ordered, start=1)]
    for segment in segments:
        segment["rgb"] = list(colour_of(segment["index"]))
    return segments


def _load_labels(field):
    import tempfile
    from pathlib import Path

    from analysis.imaging.volume import load_nifti

    with field.open("rb") as fh, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.nii.gz"
        path.write_bytes(fh.read())
        return load_nifti(path)


def segment_index_volume(run, segments=None):
    """The run's segment indices on the stored series' grid: (Volume of uint8, shape (z, y, x)), 0 elsewhere.

    Raises
    ------
    ValueError
        The run has no label map (imported HU values).
    """
    if run.segment_labels:
        volume = _load_labels(run.segment_labels)
        return volume.with_array(np.asarray(volume.array).astype(np.uint8))
    if not run.labels:
        raise ValueError(f"measurement run {run.pk} has no label map (values imported from {run.source})")
    volume = _load_labels(run.labels)
    lut = np.zeros(256, dtype=np.uint8)
    for segment in segments if segments is not None else run_segments(run):
        if segment.get("level"):
            lut[VERSE_LABEL[segment["level"]]] = segment["index"]
    return volume.with_array(lut[np.asarray(volume.array).astype(np.uint8)])

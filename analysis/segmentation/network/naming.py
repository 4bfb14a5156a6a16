"""From the network's body mask to named body segments, reusing the anatomy rules for the levels.

The network says *where* bodies are; it does not name them. Bodies are split into segments by connected
components (discs are background, so neighbouring bodies separate) and ordered head to foot. Levels come
from the rule-based segmenter (:func:`analysis.segmentation.spine.segment_vertebrae`), which finds the ribs
and the sacrum and counts along the spine: each network segment takes the level of the rule-based body it
overlaps most, one well-overlapped segment is the anchor, and every segment is named by counting from it
(:func:`analysis.segmentation.levels.levels_by_counting`). Where the count and the overlap disagree (the
network merged or split a body) the level is withheld and flagged, not guessed (SPEC section 2).
"""

from __future__ import annotations

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL, BodySegment, levels_by_counting

# A vertebral body holds at least a few ml (an adult C7 body about 5 ml, lumbar bodies 20-40 ml); a piece
# of a body cut by the edge of the field of view may be smaller, so the floor is low.
MIN_SEGMENT_ML = 0.5
# A network segment takes a rule-based level when at least this share of its voxels carries that level.
MIN_OVERLAP = 0.3
# A segment named by counting only (the rules saw no body there) stays below the 0.5 feature threshold.
COUNTED_ONLY_CONFIDENCE = 0.49


def split_bodies(mask, volume):
    """Segment-index map of a body mask: connected bodies, index 1 at the head end counting down.

    Parameters
    ----------
    mask : np.ndarray of bool, shape volume.shape
    volume : analysis.imaging.volume.Volume

    Returns
    -------
    np.ndarray of uint8, shape volume.shape
        0 background, 1..n bodies ordered by the height (LPS z, superior = larger) of their centroids.
    """
    from scipy import ndimage

    lab, n = ndimage.label(mask)  # 6-connectivity: bodies touching only at an edge across a disc stay apart
    if n == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(mask.shape, dtype=np.float32), lab, index)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    keep = index[sizes * voxel_ml >= MIN_SEGMENT_ML]
    if len(keep) == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    centroids = np.array(ndimage.center_of_mass(mask, lab, keep))
    height = volume.index_to_lps(centroids)[:, 2]
    order = keep[np.argsort(-height, kind="stable")][:255]
    lut = np.zeros(n + 1, dtype=np.uint8)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.uint8)
    return lut[lab]


def name_segments(segment_labels, rule_labels, rule_confidence):
    """Levels of network segments from the rule-based segmenter's labels, by anchor and counting.

    Parameters
    ----------
    segment_labels : np.ndarray of uint8, shape (z, y, x)
        Network segments (1 at the head end).
    rule_labels : np.ndarray of uint8, shape (z, y, x)
        VerSe labels of the rule-based segmenter on the same grid.
    rule_confidence : dict
        Level -> confidence of the rule-based segmenter.

    Returns
    -------
    segments : list of BodySegment
    notes : list of str
    flags : list of str
    """
    n = int(segment_labels.max())
    if n == 0:
        return [], ["the network found no vertebral body"], ["no_spine", "no_anchor"]
    pairs = np.stack([segment_labels.ravel(), rule_labels.ravel()], axis=1)
    pairs = pairs[pairs[:, 0] > 0]
    counts = np.zeros((n + 1, 256), dtype=np.int64)
    np.add.at(counts, (pairs[:, 0].astype(np.intp), pairs[:, 1].astype(np.intp)), 1)
    level_of_label = {v: k for k, v in VERSE_LABEL.items()}
    direct = {}
    for i in range(1, n + 1):
        total = counts[i].sum()
        overlap = counts[i, 1:].copy()
        if total == 0 or overlap.max() == 0:
            continue
        value = int(np.argmax(overlap)) + 1
        share = overlap[value - 1] / total
        if share >= MIN_OVERLAP and value in level_of_label:
            level = level_of_label[value]
            direct[i] = (level, float(share), float(rule_confidence.get(level, 0.0)))
    if not direct:
        segments = [BodySegment(index=i, flags=["level_withheld"]) for i in range(1, n + 1)]
        return segments, ["no network body overlaps a body named by the anatomy rules"], ["no_anchor"]
    anchor = max(direct, key=lambda i: (direct[i][1] * direct[i][2], -i))
    anchor_level, _, anchor_conf = direct[anchor]
    counted = levels_by_counting(n, anchor, anchor_level)
    segments, flags = [], []
    for i in range(1, n + 1):
        name = counted[i]
        seg = BodySegment(index=i)
        if i in direct and direct[i][0] != name:
            seg.flags += ["level_disagreement", "level_withheld"]
            flags.append("level_disagreement")
        elif name is None:
            seg.flags.append("level_withheld")
        elif i in direct:
            seg.level, seg.confidence = name, round(min(direct[i][2], anchor_conf), 3)
        else:
            seg.level, seg.confidence = name, round(min(COUNTED_ONLY_CONFIDENCE, anchor_conf), 3)
            seg.flags.append("named_by_counting_only")
        if seg.confidence is not None and seg.confidence < 0.5:
            seg.flags.append("low_level_confidence")
        segments.append(seg)
    if any(s.confidence is not None and s.confidence < 0.5 for s in segments):
        flags.append("low_confidence")
    notes = [f"{n} network body segments; levels counted from segment {anchor} = {anchor_level} (the anatomy "
             f"rules' body it overlaps most, confidence {anchor_conf:.2f})"]
    return segments, notes, sorted(set(flags))


def labels_of_segments(segment_labels, segments):
    """VerSe label map of named segments (withheld ones left out)."""
    lut = np.zeros(256, dtype=np.uint8)
    for seg in segments:
        if seg.level is not None:
            lut[seg.index] = VERSE_LABEL[seg.level]
    return lut[segment_labels]

"""Default segmenter: vertebral bodies with VerSe level labels, by anatomy-driven image analysis.

No network weights are needed: bodies are found in front of the tracked spinal canal
(:mod:`analysis.segmentation.bodies`), split at the discs, and named from the ribs and the sacrum
(:mod:`analysis.segmentation.labelling`). Runs on CPU; ``device`` is accepted for the future network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL

SEGMENTER_VERSION = "anatomy-0.2"


@dataclass
class SegmentationResult:
    """Vertebral bodies on the input grid with their levels.

    Attributes
    ----------
    labels : np.ndarray of uint8, shape (z, y, x)
        VerSe numbers of vertebral bodies (C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25); 0 elsewhere.
    level_confidence : dict
        Level name -> confidence 0..1.
    flags : list of str
        Case flags: "level_disagreement", "unusual_rib_count", "transitional_lumbosacral", "low_confidence",
        "no_anchor", "no_spine".
    timings_s : dict
        Seconds spent in "resample", "segmentation", "labelling" (and "load" when the caller adds it).
    segmenter_version : str
    notes : list of str
        Anchors used and why levels were given or withheld.
    """

    labels: np.ndarray
    level_confidence: dict = field(default_factory=dict)
    flags: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    segmenter_version: str = SEGMENTER_VERSION
    notes: list = field(default_factory=list)


# A rib leaves the spine laterally: bone reaching this far from the canal midline at the level of a
# vertebra is a rib (lumbar transverse processes end within about 55 mm of the midline).
RIB_REACH_MM = 65.0
# Medial end of a rib or of the sacral ala: within this lateral distance of the canal midline.
MEDIAL_MM = 40.0
# Thickness separates the sacral ala / ilium from a rib: an adult rib is at most about 15 mm in its
# largest cross-section diameter (head and neck), so a ball of radius 9 mm never fits inside it, whereas
# the sacral ala is a block of bone some 25-40 mm thick in every direction.
PELVIC_INSCRIBED_MM = 9.0
# A rib segment in the paraspinal box holds a few ml; the ilium with the ala holds far more than this.
PELVIC_ML = 40.0
# The ala reaches well beyond the side of the S1 body (half-width about 25 mm); lumbar osteophytes do not.
PELVIC_REACH_MM = 40.0


def _segment_index(points_mm, line, disc_s):
    """Segment number (0 = most inferior) of points by their nearest centreline arc position."""
    from scipy.spatial import cKDTree

    tree = cKDTree(line.points_mm)
    dist, nearest = tree.query(points_mm)
    s = line.s_mm[nearest]
    return np.searchsorted(np.asarray(disc_s), s), dist


def _lateral_attachments(hu, spacing, track, line, disc_s, n_segments, body):
    """Ribs and iliac attachments per segment and side.

    Returns
    -------
    ribs, pelvic : np.ndarray of bool, shape (n_segments, 2)
        Column 0 = patient's right, 1 = left.
    """
    from scipy import ndimage

    from analysis.segmentation.bodies import RIM_HU

    sz, sy, sx = spacing
    ribs = np.zeros((n_segments, 2), dtype=bool)
    pelvic = np.zeros((n_segments, 2), dtype=bool)
    z_idx = np.arange(hu.shape[0])
    cy = track.canal_yx[:, 0]
    cx = track.canal_yx[:, 1]
    valid = ~np.isnan(cx)
    if not valid.any():
        return ribs, pelvic
    dx = (np.arange(hu.shape[2])[None, :] - cx[:, None]) * sx  # (z, x), + = patient's left
    dy = (np.arange(hu.shape[1])[None, :] - cy[:, None]) * sy  # (z, y), + = posterior
    lateral = np.abs(dx) >= 20.0
    band = np.abs(dy) <= 45.0
    region = valid[:, None, None] & band[:, :, None] & lateral[:, None, :]
    # The bodies themselves are taken out (lumbar bodies are up to 30 mm wide on each side); what is
    # left beside them is transverse processes, ribs, alae and iliac bones.
    from analysis.segmentation.bodies import _disk

    near_body = ndimage.binary_dilation(body, structure=_disk(3.0, (sy, sx)))
    touch_body = ndimage.binary_dilation(body, structure=_disk(8.0, (sy, sx))) & ~near_body
    bone = (hu > RIM_HU) & region & ~near_body
    lab, n = ndimage.label(bone, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return ribs, pelvic
    # Radius of the largest ball inside each component (mm): its thickness.
    edt = ndimage.distance_transform_edt(bone, sampling=spacing)
    inscribed = ndimage.maximum(edt, lab, np.arange(1, n + 1))
    voxel_ml = sz * sy * sx / 1000.0
    objects = ndimage.find_objects(lab)
    for i, sl in enumerate(objects):
        sub = lab[sl] == i + 1
        zz, yy, xx = np.nonzero(sub)
        zz, yy, xx = zz + sl[0].start, yy + sl[1].start, xx + sl[2].start
        d = dx[zz, xx]
        volume_ml = len(zz) * voxel_ml
        for side, sign in ((0, -1.0), (1, 1.0)):
            on_side = sign * d > 0
            if not on_side.any():
                continue
            reach = np.abs(d[on_side]).max()
            touches_edge = (xx[on_side].min() == 0) or (xx[on_side].max() == hu.shape[2] - 1)
            medial = on_side & (np.abs(d) <= MEDIAL_MM)
            if medial.sum() < 2:
                continue
            ala = on_side & touch_body[zz, yy, xx]
            pts = np.stack([zz[medial] * sz, yy[medial] * sy, xx[medial] * sx], axis=1)
            seg, dist = _segment_index(pts, line, disc_s)
            seg = seg[dist < 60.0]
            if len(seg) == 0:
                continue
            if inscribed[i] >= PELVIC_INSCRIBED_MM or volume_ml >= PELVIC_ML:
                # The ala meets the ilium beside the body, not behind the canal (that is the posterior
                # iliac spine next to L5/S1).
                front = ala & (dy[zz, yy] <= 5.0)
                if front.sum() < 3 or reach < PELVIC_REACH_MM:
                    continue
                pts_front = np.stack([zz[front] * sz, yy[front] * sy, xx[front] * sx], axis=1)
                seg_front, dist_front = _segment_index(pts_front, line, disc_s)
                seg_front = seg_front[dist_front < 60.0]
                # The alae rise beside the L5/S1 disc, so a few of their voxels fall nearest to L5:
                # the attachment belongs to the segment(s) holding most of the contact.
                ks, counts = np.unique(seg_front, return_counts=True)
                for k, c in zip(ks, counts):
                    if 0 <= k < n_segments and c >= 3 and c >= 0.8 * counts.max():
                        pelvic[k, side] = True
            elif reach >= RIB_REACH_MM or touches_edge:
                # Each rib head is one vertebra: take the most frequent segment of the medial end.
                k = int(np.bincount(seg).argmax())
                if 0 <= k < n_segments:
                    ribs[k, side] = True
    return ribs, pelvic


# A segment between two discs this much longer than its neighbours holds two vertebrae (a missed disc):
# vertebral height changes by a few per cent per level (L1 against T11-T12 about 1.15x), whereas two
# bodies and a disc make about 2x, or less when a misplaced disc takes part of one; sqrt(2), midway
# between 1x and 2x on a ratio scale, separates the two.
MERGED_RATIO = 1.4


def _withhold_beyond_missed_disc(levels, disc_s):
    """Drop the levels counted across a segment that holds two vertebrae.

    Levels are counted segment by segment from an anchor; a missed disc shifts every name beyond it by
    one. The anchor is the segment with the highest confidence; from there outwards the first segment
    longer than :data:`MERGED_RATIO` times the median length of its neighbours (two on each side) and
    every level beyond it are withheld. A missing level is better than a wrong one.

    Returns
    -------
    levels : dict
        Segment index -> (name, confidence), without the withheld segments.
    note : str or None
    """
    if len(levels) < 2 or len(disc_s) < 3:
        return levels, None
    lengths = np.full(len(disc_s) + 1, np.nan)
    lengths[1:-1] = np.diff(np.asarray(disc_s))  # the end segments are open
    anchor = max(levels, key=lambda k: levels[k][1])
    dropped = []
    for step in (1, -1):
        k = anchor + step
        while k in levels:
            near = [lengths[j] for j in (k - 2, k - 1, k + 1, k + 2) if 0 <= j < len(lengths)]
            near = [x for x in near if np.isfinite(x)]
            if np.isfinite(lengths[k]) and near and lengths[k] > MERGED_RATIO * np.median(near):
                while k in levels:
                    dropped.append(levels.pop(k)[0])
                    k += step
                break
            k += step
    if not dropped:
        return levels, None
    return levels, (f"a segment about twice as long as its neighbours (a missed disc): levels from there "
                    f"on withheld ({', '.join(dropped)})")


def segment_vertebrae(volume, device="cpu", target_mm=1.5):
    """Segment vertebral bodies and identify their levels.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
        CT in HU, array (z, y, x), affine to LPS mm.
    device : {"cpu", "cuda"}
        Accepted for the future network; the anatomical segmenter always runs on CPU.
    target_mm : float
        Working voxel size for fine axes (mm).

    Returns
    -------
    SegmentationResult
    """
    from analysis.segmentation import bodies
    from analysis.segmentation.grid import canonical_grid
    from analysis.segmentation.labelling import Segment, label_segments

    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    timings = {}
    t0 = time.perf_counter()
    grid = canonical_grid(volume.array, volume.affine, target_mm=target_mm)
    hu, spacing = grid.hu, grid.spacing
    timings["resample"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    empty = np.zeros(volume.array.shape, dtype=np.uint8)
    track = bodies.track_canal(hu, spacing)
    if track is None:
        timings["segmentation"] = time.perf_counter() - t0
        return SegmentationResult(empty, flags=["no_spine", "no_anchor"], timings_s=timings,
                                  notes=["no spinal canal with a vertebral body in front of it was found"])
    filled = bodies.filled_bone(hu, spacing)
    mask = bodies.body_mask(hu, spacing, track, filled_all=filled)
    line = bodies.centreline(mask, spacing)
    if line is None:
        timings["segmentation"] = time.perf_counter() - t0
        return SegmentationResult(empty, flags=["no_spine", "no_anchor"], timings_s=timings,
                                  notes=["spinal canal found but no vertebral body in front of it"])
    fraction = bodies.perpendicular_profile(mask.astype(np.float32), spacing, line, radius_mm=8.0)
    hu_prof = bodies.perpendicular_profile(hu, spacing, line, radius_mm=8.0)
    discs = bodies.find_discs(fraction, hu_prof, line.s_mm)
    disc_s = [d[0] for d in discs]
    n_seg = len(disc_s) + 1
    body = mask
    mask = bodies.body_mask(hu, spacing, track, filled_all=filled, trim_corners=True)
    zz, yy, xx = np.nonzero(mask)
    pts = np.stack([zz * spacing[0], yy * spacing[1], xx * spacing[2]], axis=1)
    seg_of_voxel, dist = _segment_index(pts, line, disc_s)
    # Body voxels far from the centreline are not body (e.g. a vessel that slipped through).
    keep = dist <= 35.0
    timings["segmentation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ribs, pelvic = _lateral_attachments(hu, spacing, track, line, disc_s, n_seg, body)
    shape = hu.shape
    segments = []
    for k in range(n_seg):
        sel = keep & (seg_of_voxel == k)
        bounded = 0 < k < n_seg - 1
        cut = False
        if sel.any():
            cut = (zz[sel].min() == 0 or zz[sel].max() == shape[0] - 1 or yy[sel].min() == 0
                   or yy[sel].max() == shape[1] - 1 or xx[sel].min() == 0 or xx[sel].max() == shape[2] - 1)
        segments.append(Segment(complete=bounded and not cut and sel.any(), cut=cut, rib_right=bool(ribs[k, 0]),
                                rib_left=bool(ribs[k, 1]), pelvic_right=bool(pelvic[k, 0]),
                                pelvic_left=bool(pelvic[k, 1])))
    levels, flags, notes = label_segments(segments)
    levels, withheld = _withhold_beyond_missed_disc(levels, disc_s)
    if withheld:
        notes.append(withheld)
    work_labels = np.zeros(shape, dtype=np.uint8)
    confidence = {}
    for k, (name, conf) in levels.items():
        sel = keep & (seg_of_voxel == k)
        if not sel.any():
            continue
        work_labels[zz[sel], yy[sel], xx[sel]] = VERSE_LABEL[name]
        confidence[name] = round(float(conf), 3)
    if any(c < 0.5 for c in confidence.values()) and "low_confidence" not in flags:
        flags.append("low_confidence")
    notes.insert(0, f"{n_seg} body segments between {len(disc_s)} discs; ribs per segment (inferior first): "
                    f"{[s.ribs for s in segments]}; iliac attachment: {[s.pelvic for s in segments]}")
    # The body surface is placed at native resolution (half-maximum of the cortical shell), then the
    # labels go back to the input grid.
    from analysis.segmentation.boundary import refine_bodies

    native = grid.work_to_native(work_labels)
    native = refine_bodies(grid.input_to_native(volume.array), grid.native_spacing, native)
    labels = grid.native_to_input(native)
    timings["labelling"] = time.perf_counter() - t0
    return SegmentationResult(labels=labels, level_confidence=confidence, flags=sorted(set(flags)),
                              timings_s=timings, notes=notes)

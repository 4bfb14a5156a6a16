"""From the network's body probability to named body segments, with only the parts of the anatomy rules
that naming needs.

The network says *where* bodies are; it does not name them. Naming runs on the network grid, which is
already the rules' canonical working grid (axes S, P, L growing towards head, back and the patient's
left), cropped to a box around the network's bodies wide enough for the ribs and the canal:

1. the spinal canal is tracked (:func:`analysis.segmentation.bodies.track_canal`) and the body line runs
   in front of it (:func:`~analysis.segmentation.bodies.body_line`);
2. the discs are the gaps of the *network's* body probability along that line
   (:func:`~analysis.segmentation.bodies.find_discs` on its profile, with the HU profile for endplates);
   the body voxels are assigned to the stretch between two discs by their nearest point on the line, as
   the rules assign theirs;
3. ribs and iliac attachments per stretch come from the rules' rib tracing with the network's bodies
   taken out (:func:`analysis.segmentation.spine._lateral_attachments`), and the levels from the rules'
   counting and cross-checks (:func:`analysis.segmentation.labelling.label_segments`), withheld beyond a
   missed disc as the rules do.

The rules' own body segmentation (canal-guided body masks, the surface refinement at native resolution)
is not run: the network replaces it. Without a tracked canal the bodies are still split (connected
pieces) and kept, unnamed (``no_anchor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import BodySegment

# A vertebral body holds at least a few ml (an adult C7 body about 5 ml, lumbar bodies 20-40 ml); a piece
# of a body cut by the edge of the field of view may be smaller, so the floor is low.
MIN_SEGMENT_ML = 0.5
# The box around the network's bodies in which the canal, ribs and alae are looked for (mm beyond the bodies):
# bodies reach at most 30 mm to each side of the midline and ribs are traced to RIB_REACH_MM = 60 mm from it
# (a rib leaving the box sideways is farther out than that); the canal's centre lies 10-20 mm behind the
# bodies and the rib trace reaches 40 mm behind it (and 60 mm in front, inside the bodies' own depth plus
# the front margin); a rib is followed from 10 mm above its root, beside the upper part of its body, to
# 45 mm below; the sacrum with its alae, below the lowest network body, needs some 40 mm.
MARGIN_LATERAL_MM = 60.0
MARGIN_FRONT_MM = 30.0
MARGIN_BACK_MM = 75.0
MARGIN_ABOVE_MM = 20.0
MARGIN_BELOW_MM = 50.0
# Body voxels farther than this from the body line are not body (as in the rules: the line runs 8 mm in
# front of the canal, the front corners of a lumbar body lie about 37 mm from it).
MAX_LINE_DISTANCE_MM = 45.0


@dataclass
class NamedBodies:
    """Bodies of the network on its grid, split at the discs and named.

    Attributes
    ----------
    segments : list of BodySegment
        Head end first; ``index`` 1 at the head end.
    notes, flags : list of str
    line : analysis.segmentation.bodies.Centreline or None
        Body line in mm of the crop (None when no canal was tracked).
    disc_s : list of float
        Arc positions of the discs along ``line`` (mm).
    index_of : dict
        Stretch number (0 = inferior) -> segment index, for the stretches that hold a network body.
    offset_mm : np.ndarray, shape (3,)
        Network-grid mm (S, P, L; voxel [0, 0, 0] at 0) of the crop's first voxel.
    segment_grid : np.ndarray of uint8
        Segment index per voxel of the network grid (0 background).
    """

    segments: list
    notes: list
    flags: list
    line: object = None
    disc_s: list = field(default_factory=list)
    index_of: dict = field(default_factory=dict)
    offset_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    segment_grid: np.ndarray | None = None

    def segment_of(self, points_mm):
        """Segment index (0 = none) of points given in network-grid mm (S, P, L; voxel [0, 0, 0] at 0)."""
        from analysis.segmentation.spine import _segment_index

        points_mm = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        if self.line is None:
            return np.zeros(len(points_mm), dtype=np.uint8)
        lut = np.zeros(len(self.disc_s) + 2, dtype=np.uint8)
        for k, index in self.index_of.items():
            lut[k] = index
        out = np.zeros(len(points_mm), dtype=np.uint8)
        for start in range(0, len(points_mm), 1_000_000):
            chunk = points_mm[start:start + 1_000_000] - self.offset_mm
            k, dist = _segment_index(chunk, self.line, self.disc_s)
            out[start:start + len(chunk)] = np.where(dist <= MAX_LINE_DISTANCE_MM, lut[k], 0)
        return out


def body_mask(probability, spacing, threshold=0.5):
    """The network's bodies: probability at least ``threshold``, pieces under :data:`MIN_SEGMENT_ML` dropped."""
    from scipy import ndimage

    mask = probability >= threshold
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    keep = sizes * voxel_ml >= MIN_SEGMENT_ML
    keep[0] = False
    return keep[lab]


def crop_box(mask, spacing):
    """Slices of the network grid around the bodies (see the MARGIN constants); None without bodies."""
    from scipy import ndimage

    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes:
        return None
    box = boxes[0]
    sz, sy, sx = (float(v) for v in spacing)
    margins = ((MARGIN_BELOW_MM / sz, MARGIN_ABOVE_MM / sz), (MARGIN_FRONT_MM / sy, MARGIN_BACK_MM / sy),
               (MARGIN_LATERAL_MM / sx, MARGIN_LATERAL_MM / sx))
    return tuple(slice(max(0, int(sl.start - lo)), min(n, int(np.ceil(sl.stop + hi))))
                 for sl, (lo, hi), n in zip(box, margins, mask.shape))


def _unnamed_pieces(mask, spacing, note, flags):
    """Fallback without a canal: connected bodies, head first, none named."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return NamedBodies([], [note], flags, segment_grid=np.zeros(mask.shape, dtype=np.uint8))
    heights = np.array(ndimage.center_of_mass(mask, lab, np.arange(1, n + 1)))[:, 0]
    order = np.argsort(-heights, kind="stable")[:255]
    lut = np.zeros(n + 1, dtype=np.uint8)
    lut[order + 1] = np.arange(1, len(order) + 1, dtype=np.uint8)
    segments = [BodySegment(index=i, flags=["level_withheld"]) for i in range(1, len(order) + 1)]
    return NamedBodies(segments, [note], flags, segment_grid=lut[lab])


def name_bodies(hu, spacing, probability, threshold=0.5):
    """Split the network's bodies at the discs and name them by the anatomy rules' ribs, sacrum and counting.

    Parameters
    ----------
    hu : np.ndarray of float32, shape (s, p, l)
        HU on the network grid (axes S, P, L growing towards head, back, left).
    spacing : sequence of 3 floats
        Network voxel size along (S, P, L), mm.
    probability : np.ndarray of float32, shape (s, p, l)
        The network's body probability.
    threshold : float

    Returns
    -------
    NamedBodies
    """

    from analysis.measurement import body_in_pieces
    from analysis.segmentation import bodies
    from analysis.segmentation.labelling import label_segments
    from analysis.segmentation.spine import (
        MERGED_RATIO,
        _lateral_attachments,
        _segment_index,
        _withhold_beyond_missed_disc,
        notes_by_index,
        stretch_segment,
    )

    spacing = np.asarray(spacing, dtype=np.float64)
    mask = body_mask(probability, spacing, threshold)
    box = crop_box(mask, spacing)
    if box is None:
        return NamedBodies([], ["the network found no vertebral body"], ["no_anchor", "no_spine"],
                           segment_grid=np.zeros(mask.shape, dtype=np.uint8))
    hu_c, mask_c = np.ascontiguousarray(hu[box]), mask[box]
    offset_mm = np.array([sl.start for sl in box], dtype=np.float64) * spacing
    track = bodies.track_canal(hu_c, spacing)
    line = bodies.body_line(track, spacing) if track is not None else None
    if line is None:
        return _unnamed_pieces(mask, spacing, "no spinal canal found behind the network's bodies: levels withheld",
                               ["no_anchor"])
    # The rules' own body mask (in front of the canal, cheap on the crop) serves naming twice. The network
    # learns bodies C1-L5 (the sacrum is in no training label), so below the lowest network body it stands
    # in for the sacrum, which anchors the lumbar levels: it joins the disc search and the iliac attachments,
    # never the network's output. And the bodies are taken out of the lateral bone before ribs and alae are
    # looked for as the union of both masks: a network mask that falls short of the cortex leaves the
    # body's own rim beside it, which joined to a transverse process or the ilium reads as an attachment.
    zz, yy, xx = np.nonzero(mask_c)
    _, _, s_net = _segment_index(np.stack([zz, yy, xx], axis=1) * spacing, line, [], return_s=True)
    rules_body = bodies.body_mask(hu_c, spacing, track)
    sacral = np.zeros(mask_c.shape, dtype=bool)
    rz, ry, rx = np.nonzero(rules_body & ~mask_c)
    if len(rz):
        _, rd, rs = _segment_index(np.stack([rz, ry, rx], axis=1) * spacing, line, [], return_s=True)
        below = (rs < s_net.min() - float(spacing[0])) & (rd <= MAX_LINE_DISTANCE_MM)
        sacral[rz[below], ry[below], rx[below]] = True
    naming_mask = mask_c | sacral
    radius = bodies.BODY_LINE_RADIUS_MM
    fraction = bodies.perpendicular_profile(np.maximum(probability[box], sacral).astype(np.float32), spacing, line,
                                            radius_mm=radius)
    hu_prof = bodies.perpendicular_profile(hu_c, spacing, line, radius_mm=radius)
    width = bodies.body_width(naming_mask, spacing, track, line)
    disc_s = [d[0] for d in bodies.find_discs(fraction, hu_prof, line.s_mm, body_width_mm=width)]
    n_seg = len(disc_s) + 1
    zz, yy, xx = np.nonzero(naming_mask)
    from_network = mask_c[zz, yy, xx]
    seg_of_voxel, dist, s_of_voxel = _segment_index(np.stack([zz, yy, xx], axis=1) * spacing, line, disc_s,
                                                    return_s=True)
    keep = dist <= MAX_LINE_DISTANCE_MM
    # A stretch is cut when its body reaches the edge of the network grid (the field of view), not the crop's.
    starts = np.array([sl.start for sl in box])
    full = np.asarray(mask.shape) - 1
    cut = np.zeros(n_seg, dtype=bool)
    for k in range(n_seg):
        sel = keep & (seg_of_voxel == k)
        if sel.any():
            pts = np.stack([zz[sel], yy[sel], xx[sel]], axis=1) + starts
            cut[k] = bool((pts.min(axis=0) == 0).any() or (pts.max(axis=0) == full).any())
    cut_ends = {k for k in (0, n_seg - 1) if cut[k]}
    ribs, pelvic, ala_top = _lateral_attachments(hu_c, spacing, track, line, disc_s, n_seg, naming_mask | rules_body,
                                                 cut_ends=cut_ends)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    stretches = []
    for k in range(n_seg):
        sel = keep & (seg_of_voxel == k)
        segment = stretch_segment(k, disc_s, cut, ribs, pelvic, ala_top, s_of_voxel[sel], zz[sel],
                                  full[0] - starts[0], spacing)
        if sel.any():
            piece = np.zeros(mask_c.shape, dtype=bool)
            piece[zz[sel], yy[sel], xx[sel]] = True
            segment.body_ml = float(sel.sum()) * voxel_ml
            segment.body_height_mm = float(zz[sel].max() - zz[sel].min() + 1) * float(spacing[0])
            segment.in_pieces = body_in_pieces(piece, voxel_ml)
        stretches.append(segment)
    pitches = np.diff(np.asarray(disc_s, dtype=float))
    if len(pitches):
        for k, near in ((0, pitches[:2]), (n_seg - 1, pitches[-2:])):
            if not stretches[k].pelvic and stretches[k].extent_mm > MERGED_RATIO * float(np.median(near)):
                stretches[k].merged = True
    # Only stretches with network bodies become segments (the sacrum from the rules named the others), and not
    # a sliver of a network body that reaches across a disc.
    on_line = np.bincount(seg_of_voxel[keep & from_network], minlength=n_seg)
    has_body = [bool(on_line[k] * voxel_ml >= MIN_SEGMENT_ML) for k in range(n_seg)]
    found = [k for k in range(n_seg) if has_body[k]]
    if not found:
        return _unnamed_pieces(mask, spacing, "no network body lies along the body line: levels withheld",
                               ["no_anchor"])
    top = max(found)
    index_of = {k: top - k + 1 for k in range(min(found), top + 1)}
    levels, flags, notes = label_segments(stretches, slice_mm=float(spacing[0]))
    levels, withheld, dropped = _withhold_beyond_missed_disc(levels, disc_s)
    if withheld:
        notes.append(withheld)
        for k in dropped:
            stretches[k].flags += ["beyond_missed_disc", "level_withheld"]
    segments = []
    for k in sorted(index_of, reverse=True):
        name, conf = levels.get(k, (None, None)) if has_body[k] else (None, None)
        conf = None if conf is None else round(float(conf), 3)
        seg_flags = list(stretches[k].flags)
        if conf is not None and conf < 0.5:
            seg_flags.append("low_level_confidence")
        if name is None and "level_withheld" not in seg_flags:
            seg_flags.append("level_withheld")
        segments.append(BodySegment(index=index_of[k], level=name, confidence=conf, flags=seg_flags))
    if any(s.confidence is not None and s.confidence < 0.5 for s in segments) and "low_confidence" not in flags:
        flags.append("low_confidence")
    notes = notes_by_index(notes, index_of)
    head_first = [stretches[k] for k in range(n_seg - 1, -1, -1) if k in index_of]
    notes.insert(0, f"network bodies split at {len(disc_s)} discs of their probability along the body line; "
                    f"ribs per body segment (segment 1, at the head end, first): {[s.ribs for s in head_first]}; "
                    f"iliac attachment: {[s.pelvic for s in head_first]}")
    # Voxels are placed only in stretches holding a body (a sliver across a disc stays background).
    placed = {k: index for k, index in index_of.items() if has_body[k]}
    grid = np.zeros(mask.shape, dtype=np.uint8)
    lut = np.zeros(n_seg + 1, dtype=np.uint8)
    for k, index in placed.items():
        lut[k] = index
    grid_c = grid[box]
    out = keep & from_network
    grid_c[zz[out], yy[out], xx[out]] = lut[seg_of_voxel[out]]
    return NamedBodies(segments, notes, sorted(set(flags)), line=line, disc_s=disc_s, index_of=placed,
                       offset_mm=offset_mm, segment_grid=grid)


def labels_of_segments(segment_labels, segments):
    """VerSe label map of named segments (withheld ones left out)."""
    from analysis.segmentation.levels import VERSE_LABEL

    lut = np.zeros(256, dtype=np.uint8)
    for seg in segments:
        if seg.level is not None:
            lut[seg.index] = VERSE_LABEL[seg.level]
    return lut[segment_labels]

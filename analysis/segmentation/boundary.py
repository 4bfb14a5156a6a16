"""Vertebral body surface at native resolution: the half-maximum edge of the cortical shell.

The coarse body masks of :mod:`analysis.segmentation.bodies` come from a global bone threshold, morphology
and a 1.5 mm working grid; their surface can sit a voxel or two outside the cortex (partial-volume rim,
soft tissue closed into the mask) or inside it. A vertebral body's surface is its cortical shell, and the
standard way to place an edge in a blurred image is the half-maximum: the edge lies where the intensity
crosses halfway between the bright structure (the cortex) and its surroundings. The blur of the scanner
and of the voxel moves the peak, never the half-maximum of a step, so the same rule holds at 0.7 mm and at
3 mm. The cortex and surrounding levels are measured per vertebra, so contrast, kernel and bone density
need no global threshold.

Only a band around the coarse surface is decided by the rule: the core of the body (coarse mask eroded by
:data:`CORE_MM`) stays body whatever its HU (osteoporotic marrow can read below the threshold), and the
body cannot grow more than :data:`GROW_MM` beyond the coarse mask nor into a neighbouring level.
"""

from __future__ import annotations

import numpy as np

# The coarse surface is trusted to within this distance outwards (working-grid quantisation of 1.5 mm
# plus one native voxel of partial volume)...
GROW_MM = 2.0
# ... and inwards: the coarse mask is at most this much too large (morphological closing of 2.5 mm, a
# partial-volume voxel of 3 mm). Deeper than this is marrow.
CORE_MM = 3.0
# Light smoothing before the edge test (mm): keeps single noisy voxels from deciding an edge; a Gaussian
# does not move the half-maximum of a step edge.
SMOOTH_MM = 0.75
# Half-length of the intensity profile read along the surface normal through each band voxel (mm): it
# must reach across the band to the cortical peak on either side.
PROFILE_MM = 4.0
PROFILE_STEP_MM = 0.25
# Half the thickness of the cortical shell of a vertebral body (about 0.4-1 mm thick in adults): the
# surface lies this far outward of the shell's intensity peak.
SHELL_HALF_MM = 0.5
# A voxel within this fraction of the peak-to-surroundings contrast below the shell's peak is on the
# peak (noise of 20 HU on a 700 HU cortex is about 3 % of that contrast; a partial-volume voxel outside a
# blurred thin shell reads well below its peak).
PLATEAU_FRACTION = 0.1
# The outward normal comes from the coarse mask smoothed over this distance: wide enough that a pedicle
# root or rib head left on the coarse mask does not turn the normal along itself (the profile then
# crosses the body's shell into it, and the shell decides).
NORMAL_SMOOTH_MM = 3.0
# A shell peak rises above the marrow inward of it by at least this fraction of the peak-to-surroundings
# contrast: a 0.5 mm cortex read through a 3 mm voxel still adds about a third of that contrast, whereas
# noise on a flat marrow profile after smoothing stays well below it.
SHELL_PROMINENCE = 0.25


def _slice_fill(mask):
    """Fill holes in every axial slice (axis 0) of a boolean array."""
    from scipy import ndimage

    out = np.empty_like(mask)
    for z in range(mask.shape[0]):
        out[z] = ndimage.binary_fill_holes(mask[z]) if mask[z].any() else mask[z]
    return out


def _inside_edge(h, mask, band, spacing, surround):
    """Cortical-peak test for the band voxels along the surface normal.

    Along the normal through a band voxel the profile runs marrow -> cortical peak -> surroundings. The
    cortex is thinner than the voxel and the scanner blur, so its peak marks the middle of the shell and
    the body surface lies half a shell thickness (:data:`SHELL_HALF_MM`) outward of it; the half-maximum
    of the blurred thin shell would lie a blur width further out and take the partial-volume rim in.
    A voxel is body when its centre is no further out than that surface. Where the profile shows no
    interior peak (the cortex is not resolved, e.g. a bright osteophyte or dense marrow next to it) the
    half-maximum between the profile's maximum and the surroundings (``surround``, HU) decides.

    Returns
    -------
    np.ndarray of bool, shape = h.shape
        True for band voxels that are body (False outside the band).
    """
    from scipy import ndimage

    spacing = np.asarray(spacing, dtype=np.float64)
    # Outward normal of the coarse surface: minus the gradient of the smoothed mask, in mm.
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), sigma=NORMAL_SMOOTH_MM / spacing)
    grad = np.stack(np.gradient(smooth, *spacing), axis=0)
    idx = np.nonzero(band)
    g = -grad[(slice(None),) + idx].T  # (n, 3), mm^-1
    norm = np.linalg.norm(g, axis=1)
    ok = norm > 1e-6
    normal = np.zeros_like(g)
    normal[ok] = g[ok] / norm[ok, None]
    t = np.arange(-PROFILE_MM, PROFILE_MM + 1e-9, PROFILE_STEP_MM)  # mm along the outward normal
    centre = np.stack(idx, axis=1).astype(np.float64)  # (n, 3) voxel indices
    pts = centre[:, None, :] + t[None, :, None] * normal[:, None, :] / spacing  # (n, m, 3)
    # Cubic spline: the peak of a shell thinner than a voxel falls between voxel centres.
    coef = ndimage.spline_filter(h, order=3)
    prof = ndimage.map_coordinates(coef, pts.reshape(-1, 3).T, order=3, mode="nearest", prefilter=False)
    prof = prof.reshape(len(centre), len(t))
    # A voxel outside the coarse mask looks for its shell inward only (plus the shell half-width): the
    # profile further out may cross a neighbouring bone (rib head, pedicle, osteophyte).
    outside = ~mask[idx]
    reach = np.where(outside, SHELL_HALF_MM + PROFILE_STEP_MM, PROFILE_MM)
    prof = np.where(t[None, :] <= reach[:, None], prof, -np.inf)
    k = np.argmax(prof, axis=1)
    peak = prof[np.arange(len(k)), k]
    last = np.searchsorted(t, reach + 1e-9) - 1
    # The maximum is the shell only if it stands out of the marrow inward of it (by a quarter of the
    # peak-to-surroundings contrast); a flat marrow profile has a noisy maximum anywhere.
    inner_min = np.minimum.accumulate(prof, axis=1)[np.arange(len(k)), np.maximum(k - 1, 0)]
    prominent = peak - inner_min >= SHELL_PROMINENCE * (peak - surround)
    interior = (k > 0) & (k < last) & prominent
    h0 = h[idx]
    # A cortex as thick as the voxel (sclerotic endplates, 3 mm voxels) reads as a plateau along the
    # normal, whose maximum falls anywhere on it by noise: a voxel that reads as bright as the peak (within
    # PLATEAU_FRACTION of the peak-to-surroundings contrast) is shell itself, wherever the maximum fell.
    on_plateau = h0 >= peak - PLATEAU_FRACTION * (peak - surround)
    by_peak = (t[k] >= -SHELL_HALF_MM) | on_plateau
    # Without a shell peak the edge is a step from marrow to surroundings: half-way between the marrow
    # level (median of the profile's inner half, robust to noise) and the surroundings.
    inner_level = np.median(prof[:, t < 0.0], axis=1)
    by_half = h0 >= 0.5 * (inner_level + surround)
    inside = np.where(interior, by_peak, by_half)
    # Without a usable normal (a flat spot of the smoothed mask) the coarse decision stands.
    inside = np.where(ok, inside, mask[idx])
    out = np.zeros(h.shape, dtype=bool)
    out[idx] = inside
    return out


# A labelled body spans the slices between its two discs; a slice missing inside it is one where the
# cortical ring did not close (a thin osteoporotic cortex in noise), not a disc (a disc splits the labels).
# Up to this much is bridged with what the slices above and below have in common; without it a body split
# by one missing 3 mm slice loses the smaller piece (too thin for a core below).
BRIDGE_MM = 6.0


def _bridge_missing_slices(mask, slice_mm):
    """Fill empty slices (along axis 0) inside a body's slice range from its neighbours (in place)."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(zs) < 2:
        return
    for lower, upper in zip(zs[:-1], zs[1:]):
        if upper - lower > 1 and (upper - lower - 1) * slice_mm <= BRIDGE_MM:
            common = mask[lower] & mask[upper]
            mask[lower + 1 : upper] = common if common.any() else mask[lower] | mask[upper]


def refine_bodies(hu, spacing, labels):
    """Move every labelled body's surface to the half-maximum edge of its cortical shell.

    Parameters
    ----------
    hu : np.ndarray, shape (s, p, l)
        HU on a grid whose axis 0 is the body axis (the canonical orientation at native spacing).
    spacing : sequence of 3 floats
        Voxel size in mm along the three axes.
    labels : np.ndarray of int, shape = hu.shape
        Coarse body labels (0 = background).

    Returns
    -------
    np.ndarray, same shape and dtype as ``labels``
        Refined labels. A body never takes voxels of another label.
    """
    from scipy import ndimage

    from analysis.measurement import ellipsoid_structure

    spacing = np.asarray(spacing, dtype=np.float64)
    grow_el = ellipsoid_structure(spacing, GROW_MM)
    core_el = ellipsoid_structure(spacing, CORE_MM)
    # The surroundings: a shell up to 3 mm beyond the band (in-plane and along the axis alike).
    ring_el = ellipsoid_structure(spacing, GROW_MM + 3.0)
    margin = np.array([el.shape[a] // 2 for a, el in ((0, ring_el), (1, ring_el), (2, ring_el))]) + 1
    out = np.zeros_like(labels)
    boxes = ndimage.find_objects(labels)
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        sl = tuple(
            slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, labels.shape)
        )
        lab = labels[sl]
        mask = lab == value
        others = (lab != 0) & ~mask
        _bridge_missing_slices(mask, spacing[0])
        sigma = SMOOTH_MM / spacing
        h = ndimage.gaussian_filter(hu[sl].astype(np.float32), sigma=sigma)
        outer = ndimage.binary_dilation(mask, structure=grow_el) & ~others
        core = ndimage.binary_erosion(mask, structure=core_el, border_value=1)
        band = outer & ~core
        ring = ndimage.binary_dilation(outer, structure=ring_el) & ~outer & (lab == 0)
        # A body too thin for a core (a thin or fragmented coarse mask) has nothing to anchor the edge
        # test to: it is kept as it is rather than dropped.
        if band.sum() < 10 or ring.sum() < 10 or not core.any():
            out[sl][mask] = value
            continue
        surround = float(np.median(h[ring]))
        body = core | (band & _inside_edge(h, mask, band, spacing, surround))
        body = _slice_fill(body) & outer
        # One body: the components that hold core voxels (edge fragments of a neighbour's rim drop out).
        comp, n = ndimage.label(body)
        if n > 1:
            keep = np.unique(comp[core & body])
            body = np.isin(comp, keep[keep > 0])
        out[sl][body & (out[sl] == 0)] = value
    return out

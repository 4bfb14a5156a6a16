"""Trabecular ROI and per-vertebra HU measurement (SPEC section 2), with QA flags.

The data walk is ``volume + VerSe body labels -> trabecular_roi per level -> LevelMeasurement per level
-> measurement_json`` (the JSON of ``manage.py measure_volume``, SPEC section 6). Pure numpy/scipy: no
Django here.

The ROI
-------
Each vertebral body is eroded by ``E`` mm with the *centred* structuring element of SPEC section 2: all
voxel offsets ``(k, j, i)`` with ``(k*dz/E)^2 + (j*dy/E)^2 + (i*dx/E)^2 <= 1``. Each body is eroded on
its own (a voxel next to the neighbouring vertebra's label is background for this vertebra), and voxels
outside the image count as background: a body cut by the volume edge is eroded from the cut as well, so
its ROI never claims tissue that was not imaged. Such a body is also flagged ``touches_volume_edge``.

That erosion is the ROI of the method and the default (``roi="spec_erosion"``). The option ``roi="mid_body"``
(:func:`mid_body_roi`, ``measure_volume --roi mid_body``) keeps it clear of both endplates as well: along each head-foot column of the body only voxels at least
``max(3 mm + one slice, a quarter of the column's height)`` from both ends (on 2.5-5 mm slices a slice
centred 3 mm from an endplate still averages part of it), then only the slices of the steady marrow
plateau (a slice whose mean shows endplate or disc partial volume is dropped). On phantoms (uniform
marrow) the two agree to within noise. On real bone the mid-body ROI reads lower by what it leaves out,
endplate partial volume and the denser subchondral bone: 3-10 HU on example_ct's 3 mm reference bodies;
on a real 2.5 mm chest CT the SPEC erosion alone read up to 64 HU high (L3) against a reference ROI.

QA flags (stable strings; pages, exports and tests rely on them)
----------------------------------------------------------------
Per level:

``roi_too_small``
    ROI smaller than ``MIN_ROI_ML`` (0.5 ml) or ``MIN_ROI_VOXELS`` (20 voxels): the mean is too noisy or
    the body is mostly cut off / mis-segmented. An empty ROI has ``mean_hu = None``.
``touches_volume_edge``
    The body mask touches a face of the image volume: the vertebra is only partly imaged. It is still
    measured (the ROI keeps away from the cut), never silently treated as complete.
``contrast_exam``
    The exam is contrast-enhanced (caller says so): trabecular HU reads higher than on plain CT.
``hu_outlier``
    Mean ROI HU differs by more than ``HU_OUTLIER_HU`` (50 HU) from the running median of the measured
    levels from two above to two below, the level itself included (at least two neighbours needed). Between adjacent levels
    trabecular HU changes by a few HU; 50 HU suggests a fracture, a focal lesion or a segmentation error.
``duplicated_level``
    The label has two or more separate connected parts of vertebral-body size (the second largest at
    least ``DUPLICATE_FRACTION`` (30 %) of the largest and at least 1 ml): two vertebrae probably carry the
    same level name.
``low_level_confidence``
    The segmenter's confidence in the level name is below ``min_level_confidence`` (default 0.5, the
    threshold at which the default segmenter flags the case "low_confidence").

Case level (:func:`case_flags`): ``missing_level`` (a gap in the sequence of measured levels, e.g. T12
and L2 without L1), ``duplicated_level``, ``low_level_confidence``, ``contrast_exam`` (each when any level
carries it), plus whatever the segmenter reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import LEVEL_OF_LABEL, VERSE_LABEL

ROI_TOO_SMALL = "roi_too_small"
TOUCHES_VOLUME_EDGE = "touches_volume_edge"
CONTRAST_EXAM = "contrast_exam"
HU_OUTLIER = "hu_outlier"
MISSING_LEVEL = "missing_level"
DUPLICATED_LEVEL = "duplicated_level"
LOW_LEVEL_CONFIDENCE = "low_level_confidence"

MIN_ROI_ML = 0.5
MIN_ROI_VOXELS = 20
HU_OUTLIER_HU = 50.0
HU_OUTLIER_NEIGHBOURS = 2  # levels above and below compared with
DUPLICATE_FRACTION = 0.3
DUPLICATE_MIN_ML = 1.0
DEFAULT_MIN_LEVEL_CONFIDENCE = 0.5  # the default segmenter raises "low_confidence" below 0.5 too
# ROI methods (the ``roi`` parameter of the measuring functions and of OUT.json).
ROI_MID_BODY = "mid_body"  # option: SPEC erosion kept clear of both endplates (:func:`mid_body_roi`)
ROI_SPEC_EROSION = "spec_erosion"  # default: SPEC section 2 erosion alone (:func:`trabecular_roi`)
ROI_METHODS = (ROI_MID_BODY, ROI_SPEC_EROSION)


def ellipsoid_structure(spacing, erosion_mm) -> np.ndarray:
    """The centred ellipsoidal structuring element of SPEC section 2.

    Parameters
    ----------
    spacing : sequence of 3 floats
        Voxel size ``(dz, dy, dx)`` in mm, in array axis order.
    erosion_mm : float
        Erosion depth E in mm (> 0).

    Returns
    -------
    np.ndarray of bool, shape (2*rz+1, 2*ry+1, 2*rx+1)
        True at the offsets ``(k, j, i)`` with ``(k*dz/E)^2 + (j*dy/E)^2 + (i*dx/E)^2 <= 1``; the centre is
        the origin offset, ``r = floor(E / d)`` per axis.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be 3 positive numbers (dz, dy, dx) in mm, got {spacing}")
    if not erosion_mm > 0:
        raise ValueError(f"erosion_mm must be > 0 for a structuring element, got {erosion_mm}")
    # One extra offset per axis, then trimmed: the inequality itself decides, never a rounded radius.
    radius = [int(np.ceil(erosion_mm / s)) + 1 for s in spacing]
    k, j, i = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    element = (k * spacing[0] / erosion_mm) ** 2 + (j * spacing[1] / erosion_mm) ** 2 + (
        i * spacing[2] / erosion_mm
    ) ** 2 <= 1.0
    keep = [np.flatnonzero(element.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    # The element is symmetric, so trimming the empty outer planes keeps it centred.
    return element[keep[0][0] : keep[0][-1] + 1, keep[1][0] : keep[1][-1] + 1, keep[2][0] : keep[2][-1] + 1]


def _bounding_box(mask: np.ndarray):
    """Slices of the smallest box holding all True voxels, or None for an empty mask."""
    from scipy import ndimage

    boxes = ndimage.find_objects(mask.astype(np.uint8, copy=False))
    return boxes[0] if boxes else None


def trabecular_roi(body_mask, spacing, erosion_mm=3.0) -> np.ndarray:
    """Trabecular ROI: a vertebral body mask eroded by ``erosion_mm`` with the SPEC ellipsoid.

    Parameters
    ----------
    body_mask : np.ndarray of bool, shape (z, y, x)
        One vertebral body.
    spacing : sequence of 3 floats
        ``(dz, dy, dx)`` in mm.
    erosion_mm : float, default 3.0
        Erosion depth in mm; 0 returns the body itself.

    Returns
    -------
    np.ndarray of bool, shape (z, y, x)
        The ROI. Voxels outside the image are background (see the module docstring).

    Notes
    -----
    The erosion runs on the body's bounding box only. This is exactly the full-volume erosion with
    ``border_value=0``: a voxel outside the box is background in the mask, so whether the box edge or the
    volume beyond it bounds the neighbourhood makes no difference, and voxels outside the box are not in
    the eroded result because the element contains the origin.
    """
    from scipy import ndimage

    mask = np.asarray(body_mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"body_mask must be 3-D (z, y, x), got shape {mask.shape}")
    if erosion_mm < 0:
        raise ValueError(f"erosion_mm must be >= 0, got {erosion_mm}")
    if erosion_mm == 0:
        return mask.copy()
    element = ellipsoid_structure(spacing, erosion_mm)
    roi = np.zeros_like(mask)
    box = _bounding_box(mask)
    if box is None:
        return roi
    roi[box] = ndimage.binary_erosion(mask[box], structure=element, border_value=0)
    return roi


# The endplate margin and the marrow plateau (see :func:`mid_body_roi`).
ENDPLATE_MARGIN_MM = 3.0
PLATEAU_HU = 30.0
PLATEAU_NOISE_SE = 3.0


def cranio_caudal_axis(affine) -> int:
    """The array axis (0, 1 or 2 of ``(z, y, x)``) that runs closest to head-foot for a Volume affine.

    The affine maps ``(i, j, k)`` = (x, y, z) indices to LPS mm, so array axis ``a`` steps along affine
    column ``2 - a``; head-foot is the patient S axis (row 2).
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(m[2]) / np.linalg.norm(m, axis=0)
    return int(2 - np.argmax(cosines))


def _column_depth(mask: np.ndarray, open_low: bool, open_high: bool):
    """Head-foot columns of a body (axis 0 runs head-foot): for every voxel, the voxels between it and the
    nearer end of its column, the column's height in voxels, and whether the column reaches a cut.

    A column runs from its first to its last body voxel (a hole inside the body does not end it). An end
    at a cut (``open_low`` / ``open_high``: that face of the array is the volume's edge and the column
    reaches it) is no endplate and does not count as an end.
    """
    n = mask.shape[0]
    first = np.argmax(mask, axis=0)
    last = n - 1 - np.argmax(mask[::-1], axis=0)
    cut_low = (first == 0) & bool(open_low)
    cut_high = (last == n - 1) & bool(open_high)
    z = np.arange(n).reshape((n,) + (1,) * (mask.ndim - 1))
    far = 4 * n  # farther than any end
    depth = np.minimum(np.where(cut_low, far, z - first), np.where(cut_high, far, last - z))
    length = np.broadcast_to(last - first + 1, mask.shape)
    return depth, length, np.broadcast_to(cut_low | cut_high, mask.shape)


def _marrow_plateau(roi: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """The ROI's slices (axis 0) that form the longest stretch of steady marrow HU; the rest is dropped.

    Slice means of trabecular bone change little along the middle of a body; a slice that also holds
    part of an endplate (cortical bone, ~1000 HU or more) or of the disc reads off by tens to hundreds of
    HU. A stretch of neighbouring slices is steady when its slice means span at most ``PLATEAU_HU`` (each
    mean given ``PLATEAU_NOISE_SE`` standard errors of slack); the steady stretch holding the most ROI
    voxels is the marrow. Central slices are never preferred by position, so a body
    mask that reaches one slice too far into a neighbour cannot make the neighbour's endplate the reference.
    """
    present = np.flatnonzero(roi.reshape(roi.shape[0], -1).any(axis=1))
    if len(present) < 3:
        return roi
    means, counts, sds = [], [], []
    for z in present:
        values = hu[z][roi[z]].astype(np.float64)
        means.append(values.mean())
        counts.append(values.size)
        sds.append(values.std())
    means, counts, sds = np.array(means), np.array(counts), np.array(sds)
    # Slice j allows the marrow value to lie within PLATEAU_HU / 2 plus the noise of its mean; a stretch is
    # steady while one value is allowed by all its slices (their means then span at most PLATEAU_HU, plus
    # the noise). The voxel spread is the body's typical slice's (the median): a slice holding part of an
    # endplate has a wide spread of its own and must not widen its own allowance.
    reach = PLATEAU_HU / 2 + PLATEAU_NOISE_SE * np.median(sds) / np.sqrt(counts)
    best, best_span = -1, (0, len(present))
    for a in range(len(present)):
        b, low, high = a + 1, means[a] - reach[a], means[a] + reach[a]
        while b < len(present):
            low, high = max(low, means[b] - reach[b]), min(high, means[b] + reach[b])
            if low > high:
                break
            b += 1
        total = int(counts[a:b].sum())
        if total > best:
            best, best_span = total, (a, b)
    keep = np.zeros(roi.shape[0], dtype=bool)
    keep[present[best_span[0] : best_span[1]]] = True
    return roi & keep.reshape((-1,) + (1,) * (roi.ndim - 1))


def mid_body_roi(body_mask, hu, spacing, erosion_mm=3.0, axis=0, cut=(False, False)) -> np.ndarray:
    """The measured trabecular ROI: the SPEC erosion kept away from both endplates.

    Parameters
    ----------
    body_mask : np.ndarray of bool, shape (z, y, x)
        One vertebral body (a crop around it is enough).
    hu : np.ndarray, same shape
        CT in HU.
    spacing : sequence of 3 floats
        ``(dz, dy, dx)`` in mm.
    erosion_mm : float, default 3.0
    axis : int, default 0
        The array axis that runs head-foot (:func:`cranio_caudal_axis`).
    cut : pair of bool
        Whether the low / high face of the array along ``axis`` is the volume's edge (the body runs on
        beyond the scan there: that end is no endplate).

    Returns
    -------
    np.ndarray of bool
        :func:`trabecular_roi`, then, along each head-foot column of the body, only voxels whose centre lies
        at least ``max(ENDPLATE_MARGIN_MM + t, h / 4)`` from both ends of the column (t the slice spacing
        along the axis, h the column's height; the central voxel(s) of a column are always kept), then
        only the slices of the marrow plateau (:func:`_marrow_plateau`). Where the margin would leave less
        than ``MIN_ROI_VOXELS`` / ``MIN_ROI_ML`` (a small body on thick slices) it is given up and only the
        plateau test applies.

    Notes
    -----
    Why: SPEC section 2 erodes the body by 3 mm. On thin slices that keeps the ROI 3 mm from the endplate;
    on 2.5-5 mm slices a slice centred 3 mm from the endplate still averages part of it (the slice
    profile is about one slice thick), and the body mask's own end is only known to one slice. So the
    margin is the 3 mm plus one slice. The central half of the body height is where QCT places its
    mid-vertebral ROI, clear of the denser subchondral bone. The plateau test then drops any remaining
    slice whose mean shows endplate or disc partial volume, wherever the body mask ended.
    """
    mask = np.asarray(body_mask, dtype=bool)
    roi = trabecular_roi(mask, spacing, erosion_mm)
    if not roi.any():
        return roi
    t = float(spacing[axis])
    m = np.moveaxis(mask, axis, 0)
    depth, length, open_run = _column_depth(m, *cut)
    need_mm = np.where(open_run, ENDPLATE_MARGIN_MM + t, np.maximum(ENDPLATE_MARGIN_MM + t, 0.25 * length * t))
    # The voxel's centre lies (depth + 0.5) slices from the end face of its column.
    need = np.ceil(need_mm / t - 0.5 - 1e-9)
    central = np.where(open_run, need, (length - 1) // 2)
    keep = depth >= np.minimum(need, central)
    out = np.moveaxis(np.moveaxis(roi, axis, 0) & keep, 0, axis)
    n_out = int(np.count_nonzero(out))
    if n_out < MIN_ROI_VOXELS or n_out * float(np.prod(spacing)) / 1000.0 < MIN_ROI_ML:
        # A small body on thick slices: the margin would leave too little to measure (``roi_too_small``);
        # it is given up, and the plateau test alone keeps endplate slices out.
        out = roi
    plateau = _marrow_plateau(np.moveaxis(out, axis, 0), np.moveaxis(np.asarray(hu), axis, 0))
    return np.moveaxis(plateau, 0, axis)


def _box_roi(volume, mask_box, box, erosion_mm, roi):
    """The ROI of one body cropped to its bounding box ``box`` (exact: see :func:`trabecular_roi`; the
    head-foot columns and slices of a body never leave its box)."""
    if roi not in ROI_METHODS:
        raise ValueError(f"roi must be one of {ROI_METHODS}, got {roi!r}")
    if roi == ROI_SPEC_EROSION or erosion_mm == 0:
        return trabecular_roi(mask_box, volume.spacing, erosion_mm)
    axis = cranio_caudal_axis(volume.affine)
    cut = (box[axis].start == 0, box[axis].stop == volume.shape[axis])
    return mid_body_roi(mask_box, volume.array[box], volume.spacing, erosion_mm, axis=axis, cut=cut)


def measured_roi(volume, body_mask, erosion_mm=3.0, roi=ROI_SPEC_EROSION) -> np.ndarray:
    """The ROI that :func:`measure_levels` measures for one body of ``volume``.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
    body_mask : np.ndarray of bool, shape = volume.shape
    erosion_mm : float, default 3.0
    roi : str, default ``"spec_erosion"``
        ``"mid_body"`` (:func:`mid_body_roi`) or ``"spec_erosion"`` (:func:`trabecular_roi`).

    Returns
    -------
    np.ndarray of bool, shape = volume.shape
    """
    mask = np.asarray(body_mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"body mask shape {mask.shape} does not match the image shape {volume.shape}")
    out = np.zeros_like(mask)
    box = _bounding_box(mask)
    if box is not None:
        out[box] = _box_roi(volume, mask[box], box, erosion_mm, roi)
    return out


@dataclass
class LevelMeasurement:
    """HU statistics of one vertebra's trabecular ROI.

    Attributes
    ----------
    level : str
        Level name, e.g. ``"L1"``.
    label : int
        VerSe label number (SPEC section 6).
    mean_hu, median_hu, sd_hu : float or None
        HU in the ROI (SD with ddof=1); None when the ROI is empty (SD also when it has one voxel).
    roi_voxels, body_voxels : int
        Voxel counts of the ROI and of the whole body mask.
    roi_volume_ml, body_volume_ml : float
        Volumes in ml (cm3).
    centroid_mm : tuple of 3 floats
        Centroid of the body mask in mm, in the volume's source convention (RAS for NIfTI input, LPS for
        DICOM), order (x, y, z).
    flags : list of str
        QA flags of this level (module docstring).
    """

    level: str
    label: int
    mean_hu: float | None
    median_hu: float | None
    sd_hu: float | None
    roi_voxels: int
    body_voxels: int
    roi_volume_ml: float
    body_volume_ml: float
    centroid_mm: tuple
    flags: list = field(default_factory=list)


def _duplicated(mask_box: np.ndarray, voxel_ml: float) -> bool:
    """Whether one body label holds two or more separate pieces of vertebral-body size (``duplicated_level``:
    the second largest at least DUPLICATE_FRACTION of the largest and DUPLICATE_MIN_ML)."""
    from scipy import ndimage

    components, count = ndimage.label(mask_box, structure=np.ones((3, 3, 3), dtype=bool))
    if count < 2:
        return False
    sizes = np.sort(np.bincount(components.ravel())[1:])[::-1]
    second = sizes[1]
    return bool(second >= DUPLICATE_FRACTION * sizes[0] and second * voxel_ml >= DUPLICATE_MIN_ML)


def body_in_pieces(mask: np.ndarray, voxel_ml: float) -> bool:
    """Whether a body mask is two or more separate pieces of vertebral-body size (the ``duplicated_level``
    rule: two vertebrae under one name, or one body split by a false disc).

    Parameters
    ----------
    mask : np.ndarray of bool, shape (z, y, x)
        One body (a crop around it is enough).
    voxel_ml : float
        Volume of one voxel in ml.
    """
    box = _bounding_box(mask)
    return False if box is None else _duplicated(np.asarray(mask)[box], voxel_ml)


def measure_levels(
    volume,
    body_labels,
    erosion_mm=3.0,
    contrast=False,
    level_confidence=None,
    min_level_confidence=DEFAULT_MIN_LEVEL_CONFIDENCE,
    roi=ROI_SPEC_EROSION,
) -> dict:
    """Measure the trabecular HU of every labelled vertebral body.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
        CT in HU, array shape (z, y, x).
    body_labels : np.ndarray of int, shape (z, y, x)
        Vertebral bodies in VerSe numbering (C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25); 0 is
        background. Other values (e.g. 26 sacrum, 28 T13) raise ValueError: they are not levels this
        product measures, and dropping them silently would hide a labelling problem.
    erosion_mm : float, default 3.0
        ROI erosion depth in mm (SPEC section 2).
    contrast : bool, default False
        The exam is contrast-enhanced; every level gets ``contrast_exam``.
    level_confidence : dict of str to float, optional
        Segmenter confidence (0-1) in each level name.
    min_level_confidence : float, default 0.5
        Below this, a level is flagged ``low_level_confidence``.
    roi : str, default ``"spec_erosion"``
        ``"spec_erosion"``: the SPEC section 2 erosion alone (:func:`trabecular_roi`, the default);
        ``"mid_body"``: the SPEC erosion kept clear of both endplates (:func:`mid_body_roi`).

    Returns
    -------
    dict of str to LevelMeasurement
        In cranio-caudal order.
    """
    from scipy import ndimage

    labels = np.asarray(body_labels)
    if labels.shape != volume.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the image shape {volume.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError("label map must hold integer labels")
        labels = labels.astype(np.int32)
    if labels.size and int(labels.min()) < 0:
        raise ValueError("label map holds negative values; VerSe body labels are 1-25")
    if labels.size and int(labels.max()) > 255:
        raise ValueError(f"label value {int(labels.max())} is not a vertebral body label (VerSe 1-25)")
    if labels.dtype != np.uint8:
        labels = labels.astype(np.uint8)
    # One pass over the volume finds every label's bounding box (np.unique would sort all voxels).
    boxes = ndimage.find_objects(labels)
    unknown = [value for value, box in enumerate(boxes, start=1) if box is not None and value not in LEVEL_OF_LABEL]
    if unknown:
        raise ValueError(f"label values {unknown} are not vertebral body labels (VerSe 1-25)")

    if erosion_mm < 0:
        raise ValueError(f"erosion_mm must be >= 0, got {erosion_mm}")
    level_confidence = level_confidence or {}
    results = {}
    for value, stats in _body_statistics(volume, labels, boxes, erosion_mm, contrast, roi).items():
        level = LEVEL_OF_LABEL[value]
        flags = stats.pop("flags")
        confidence = level_confidence.get(level)
        if confidence is not None and confidence < min_level_confidence:
            flags.append(LOW_LEVEL_CONFIDENCE)
        results[level] = LevelMeasurement(level=level, label=value, flags=flags, **stats)
    _flag_hu_outliers(results)
    return results


def _body_statistics(volume, labels, boxes, erosion_mm, contrast, roi_method=ROI_MID_BODY) -> dict:
    """HU statistics and body flags of every labelled body of a uint8 label map.

    Returns
    -------
    dict of int to dict
        Label value -> keyword arguments of :class:`LevelMeasurement` (without level and label), flags
        ``roi_too_small``, ``touches_volume_edge``, ``contrast_exam`` and ``duplicated_level``.
    """
    spacing = volume.spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    hu = volume.array
    results = {}
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = labels[box] == value
        # Same exact crop argument as in trabecular_roi: erosion of the box == erosion of the volume.
        roi = _box_roi(volume, mask, box, erosion_mm, roi_method)
        values = hu[box][roi].astype(np.float64)
        n_roi = int(values.size)
        n_body = int(np.count_nonzero(mask))
        offset = np.array([s.start for s in box], dtype=np.float64)
        centroid_index = np.argwhere(mask).mean(axis=0) + offset
        centroid = tuple(float(c) for c in volume.index_to_source(centroid_index))

        flags = []
        if n_roi < MIN_ROI_VOXELS or n_roi * voxel_ml < MIN_ROI_ML:
            flags.append(ROI_TOO_SMALL)
        if any(s.start == 0 or s.stop == size for s, size in zip(box, labels.shape)):
            flags.append(TOUCHES_VOLUME_EDGE)
        if contrast:
            flags.append(CONTRAST_EXAM)
        if _duplicated(mask, voxel_ml):
            flags.append(DUPLICATED_LEVEL)
        results[value] = dict(
            mean_hu=float(values.mean()) if n_roi else None,
            median_hu=float(np.median(values)) if n_roi else None,
            sd_hu=float(values.std(ddof=1)) if n_roi > 1 else None,
            roi_voxels=n_roi,
            body_voxels=n_body,
            roi_volume_ml=n_roi * voxel_ml,
            body_volume_ml=n_body * voxel_ml,
            centroid_mm=centroid,
            flags=flags,
        )
    return results


@dataclass
class SegmentMeasurement:
    """HU statistics of one body segment, named or not (the ``segments`` contract, SPEC section 6).

    Attributes
    ----------
    index : int
        Segment index, 1 at the head end counting down.
    level : str or None
    confidence : float or None
        The segmenter's confidence in ``level`` (None when not named or named from outside).
    mean_hu, median_hu, sd_hu : float or None
        HU in the trabecular ROI; None when the ROI is empty (or the segment has no voxels left).
    roi_voxels, body_voxels : int
    body_volume_ml : float
    centroid_mm : tuple of 3 floats or None
        Body centroid in the volume's source convention, order (x, y, z).
    flags : list of str
        The segmenter's flags of this segment, then the QA flags of the module docstring.
    """

    index: int
    level: str | None
    confidence: float | None
    mean_hu: float | None
    median_hu: float | None
    sd_hu: float | None
    roi_voxels: int
    body_voxels: int
    body_volume_ml: float
    centroid_mm: tuple | None
    flags: list = field(default_factory=list)


def measure_segments(volume, segment_labels, segments, erosion_mm=3.0, contrast=False, roi=ROI_SPEC_EROSION) -> list:
    """Measure the trabecular HU of every body segment, named or not.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
        CT in HU, array shape (z, y, x).
    segment_labels : np.ndarray of int, shape (z, y, x)
        Segment indices (1 at the head end), 0 elsewhere.
    segments : list of analysis.segmentation.levels.BodySegment
        One per index; its level, confidence and flags are carried over.
    erosion_mm : float, default 3.0
    contrast : bool, default False
    roi : str, default ``"spec_erosion"``
        As in :func:`measure_levels`.

    Returns
    -------
    list of SegmentMeasurement
        Head end first. A segment without voxels in the map (e.g. emptied by the surface refinement)
        keeps its entry with zero voxels and no HU. ``hu_outlier`` compares a segment with its
        neighbouring segments as :func:`measure_levels` compares neighbouring levels.
    """
    from scipy import ndimage

    labels = np.asarray(segment_labels)
    if labels.shape != volume.shape:
        raise ValueError(f"segment map shape {labels.shape} does not match the image shape {volume.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise ValueError("segment indices must lie in 0..255")
    labels = labels.astype(np.uint8, copy=False)
    if erosion_mm < 0:
        raise ValueError(f"erosion_mm must be >= 0, got {erosion_mm}")
    stats = _body_statistics(volume, labels, ndimage.find_objects(labels), erosion_mm, contrast, roi)
    results = []
    for segment in sorted(segments, key=lambda s: s.index):
        found = stats.get(segment.index)
        if found is None:
            found = dict(mean_hu=None, median_hu=None, sd_hu=None, roi_voxels=0, body_voxels=0,
                         body_volume_ml=0.0, centroid_mm=None, flags=[ROI_TOO_SMALL])
        found.pop("roi_volume_ml", None)
        flags = list(segment.flags) + [f for f in found.pop("flags") if f not in segment.flags]
        results.append(SegmentMeasurement(index=segment.index, level=segment.level, confidence=segment.confidence,
                                          flags=flags, **found))
    by_index = {m.index: m for m in results}
    usable = {m.index: m.mean_hu for m in results if m.mean_hu is not None and ROI_TOO_SMALL not in m.flags}
    for m in results:
        if m.index in usable and _is_hu_outlier(m.mean_hu, m.index, usable) and HU_OUTLIER not in m.flags:
            by_index[m.index].flags.append(HU_OUTLIER)
    return results


def segments_json(segments: list) -> list:
    """The OUT.json ``segments`` list (SPEC section 6) of :func:`measure_segments` results, head end first."""
    return [
        {
            "index": int(m.index),
            "level": m.level,
            "confidence": _round(m.confidence, 3),
            "centroid_mm": None if m.centroid_mm is None else [round(float(c), 3) for c in m.centroid_mm],
            "mean_hu": _round(m.mean_hu),
            "median_hu": _round(m.median_hu),
            "sd_hu": _round(m.sd_hu),
            "roi_voxels": int(m.roi_voxels),
            "body_volume_ml": _round(m.body_volume_ml),
            "flags": list(m.flags),
        }
        for m in segments
    ]


def _is_hu_outlier(mean_hu, key, usable) -> bool:
    """Mean HU more than HU_OUTLIER_HU from the running median of the neighbours within two positions."""
    window = [usable[v] for v in range(key - HU_OUTLIER_NEIGHBOURS, key + HU_OUTLIER_NEIGHBOURS + 1) if v in usable]
    # A running median that includes the value itself: one outlier cannot drag the reference of its
    # neighbours (at the end of the sequence a value has only two neighbours, one of them maybe the outlier).
    return len(window) >= 3 and abs(mean_hu - float(np.median(window))) > HU_OUTLIER_HU


def _flag_hu_outliers(results: dict) -> None:
    usable = {
        m.label: m.mean_hu for m in results.values() if m.mean_hu is not None and ROI_TOO_SMALL not in m.flags
    }
    for m in results.values():
        if m.label in usable and _is_hu_outlier(m.mean_hu, m.label, usable):
            m.flags.append(HU_OUTLIER)


def missing_levels(measurements: dict) -> list:
    """Level names absent between the most cranial and the most caudal measured level."""
    labels = sorted(m.label for m in measurements.values())
    if not labels:
        return []
    return [LEVEL_OF_LABEL[v] for v in range(labels[0], labels[-1] + 1) if v not in labels]


def case_flags(measurements: dict, segmentation_flags=()) -> list:
    """Case-level QA flags: ``missing_level`` plus level flags that concern the whole case.

    Parameters
    ----------
    measurements : dict of str to LevelMeasurement
    segmentation_flags : iterable of str
        Flags the segmenter raised for the case (kept, deduplicated).

    Returns
    -------
    list of str
        Sorted, unique.
    """
    flags = set(segmentation_flags)
    if missing_levels(measurements):
        flags.add(MISSING_LEVEL)
    for m in measurements.values():
        flags.update(f for f in m.flags if f in (DUPLICATED_LEVEL, LOW_LEVEL_CONFIDENCE, CONTRAST_EXAM))
    return sorted(flags)


# A level whose measurement looks wrong is not trusted by name either: two body-sized pieces under one name
# (two vertebrae called the same) or a mean HU far from its neighbours' (a body of another level, a
# fracture or a mis-segmentation) drops its confidence below DEFAULT_MIN_LEVEL_CONFIDENCE.
DOUBTING_FLAGS = (DUPLICATED_LEVEL, HU_OUTLIER)
DOUBTED_CONFIDENCE = 0.4


def doubt_flagged_levels(measurements: dict, segments=(), level_confidence=None) -> tuple:
    """Lower the confidence of every named level whose measurement carries a doubting flag.

    Parameters
    ----------
    measurements : dict of str to LevelMeasurement
        From :func:`measure_levels`; flagged levels get ``low_level_confidence`` (in place).
    segments : list of SegmentMeasurement
        From :func:`measure_segments` on the same bodies: a named segment's flags count for its level too,
        and its confidence and flags are updated alike (in place).
    level_confidence : dict of str to float, optional
        The segmenter's confidence per level; levels without one are left alone (names from outside).

    Returns
    -------
    level_confidence : dict of str to float
        A new dict, doubted levels at most :data:`DOUBTED_CONFIDENCE`.
    notes : list of str
        One per doubted level, naming the flag.
    """
    confidence = dict(level_confidence or {})
    by_level = {m.level: m for m in segments if m.level}
    notes = []
    for level, m in measurements.items():
        segment = by_level.get(level)
        found = [f for f in DOUBTING_FLAGS if f in m.flags or (segment is not None and f in segment.flags)]
        if not found or confidence.get(level) is None:
            continue
        if confidence[level] >= DOUBTED_CONFIDENCE:
            confidence[level] = DOUBTED_CONFIDENCE
        notes.append(f"{level}: {', '.join(found)}: level confidence lowered to {confidence[level]}")
        for target in filter(None, (m, segment)):
            for flag in found + [LOW_LEVEL_CONFIDENCE]:
                if flag not in target.flags:
                    target.flags.append(flag)
        if segment is not None:
            segment.confidence = confidence[level]
    return confidence, notes


@dataclass
class MeasuredSegmentation:
    """Everything measured on one segmentation: per level, per segment, and the confidence after the checks.

    Attributes
    ----------
    levels : dict of str to LevelMeasurement
    segments : list of SegmentMeasurement
    level_confidence : dict of str to float or None
        The segmenter's confidence with doubted levels lowered (:func:`doubt_flagged_levels`); None when
        the names came from outside.
    segmentation_flags : list of str
        The segmenter's case flags, plus ``low_confidence`` when a level was doubted here.
    notes : list of str
        The segmenter's notes, plus one per level doubted here.
    """

    levels: dict
    segments: list
    level_confidence: dict | None
    segmentation_flags: list
    notes: list


def measure_segmentation(volume, labels, segment_labels, segments, *, level_confidence=None,
                         segmentation_flags=(), notes=(), erosion_mm=3.0, contrast=False, roi=ROI_SPEC_EROSION):
    """Measure every named level and every body segment, and doubt the levels whose measurement looks wrong.

    The one data walk from a segmentation to its numbers, shared by ``measure_volume``, the exam pipeline
    and the benchmarks.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
    labels : np.ndarray, shape (z, y, x)
        VerSe body labels.
    segment_labels : np.ndarray, shape (z, y, x)
        Segment indices (1 at the head end).
    segments : list of analysis.segmentation.levels.BodySegment
    level_confidence : dict of str to float, optional
    segmentation_flags, notes : sequence of str
    erosion_mm : float
    contrast : bool
    roi : str, default ``"spec_erosion"``
        As in :func:`measure_levels`.

    Returns
    -------
    MeasuredSegmentation
    """
    levels = measure_levels(volume, labels, erosion_mm=erosion_mm, contrast=contrast,
                            level_confidence=level_confidence, roi=roi)
    measured = measure_segments(volume, segment_labels, segments, erosion_mm=erosion_mm, contrast=contrast, roi=roi)
    flags, notes = list(segmentation_flags), list(notes)
    if level_confidence is not None:
        level_confidence, doubts = doubt_flagged_levels(levels, measured, level_confidence)
        if doubts:
            notes += doubts
            flags = sorted(set(flags) | {"low_confidence"})
    return MeasuredSegmentation(levels, measured, level_confidence, flags, notes)


def _round(value, digits=4):
    return None if value is None else round(float(value), digits)


def measurement_json(measurements: dict, timings: dict, segmentation_flags=(), **extra) -> dict:
    """The JSON document of ``measure_volume`` (SPEC section 6).

    Parameters
    ----------
    measurements : dict of str to LevelMeasurement
    timings : dict of str to float
        Seconds per step (load, segmentation, measure, total, ...).
    segmentation_flags : iterable of str
        Case flags from the segmenter.
    **extra
        More top-level keys (e.g. ``erosion_mm``, ``segmenter``, ``coordinate_convention``).

    Returns
    -------
    dict
        ``{"levels": {name: {"mean_hu", "median_hu", "sd_hu", "roi_voxels", "body_voxels",
        "body_volume_ml", "centroid_mm": [x, y, z], "flags"}}, "flags": [...], "missing_levels": [...],
        "timings_s": {...}, **extra}``. HU values are rounded to 1e-4 HU, volumes to 1e-4 ml, centroids
        to 1e-3 mm.
    """
    levels = {}
    for name in sorted(measurements, key=lambda n: VERSE_LABEL[n]):
        m = measurements[name]
        levels[name] = {
            "mean_hu": _round(m.mean_hu),
            "median_hu": _round(m.median_hu),
            "sd_hu": _round(m.sd_hu),
            "roi_voxels": int(m.roi_voxels),
            "body_voxels": int(m.body_voxels),
            "body_volume_ml": _round(m.body_volume_ml),
            "centroid_mm": [round(float(c), 3) for c in m.centroid_mm],
            "flags": list(m.flags),
        }
    document = {
        "levels": levels,
        "flags": case_flags(measurements, segmentation_flags),
        "missing_levels": missing_levels(measurements),
        "timings_s": {k: round(float(v), 4) for k, v in timings.items()},
    }
    document.update(extra)
    return document

"""Synthetic spine CT phantoms with exact label maps.

The phantom is defined analytically in DICOM patient coordinates (LPS, mm: x to the patient's left,
y posterior, z towards the head) and sampled at voxel centres, so every voxel belongs to exactly one
tissue and the label maps are exact by construction (no partial volume). It is used by tests (known
trabecular HU per level), benchmarks, the demo site and as training data.

Anatomy (adult, simplified, straight spine):

- trunk: elliptic cylinder of soft tissue (40 HU) with a 15 mm ring of subcutaneous fat (-100 HU), air
  (-1000 HU) outside;
- vertebrae C7-L5 (and S1 with the sacrum) stacked cranio-caudally: bodies are elliptic cylinders 14-28 mm
  high, growing caudally, with a 1.5 mm cortical shell (700 HU) around a trabecular core of the chosen HU,
  intervertebral discs (80 HU) between them; posterior elements (pedicles, lamina, transverse and spinous
  processes, 400 HU) around the spinal canal (20 HU);
- 12 pairs of ribs (350 HU) on T1-T12: the rib head sits next to the body/pedicle junction at the
  costovertebral joint, the rib passes in front of the transverse process tip, curves round the thorax and
  descends anteriorly; T1-T7 reach the front, T8-T10 stop anterolaterally, T11 and T12 are short floating
  ribs. No rib touches a vertebra (there is a joint space) or another rib;
- lungs (-850 HU) inside the rib cage from above T1 down to T11, lateral to the mediastinum;
- sacrum (label 26, as in the VerSe data set): S1 body with alae, then S2-S5 tapering and curving back.

Not modelled: spinal curvature, pelvis, organs, vessels, partial volume, beam hardening.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL

PHANTOM_LEVELS = ("C7",) + tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6)) + ("S1",)
SACRUM_LABEL = 26  # VerSe's sacrum label; not a measured level (SPEC numbering stops at L6 = 25)
RIB_LEVELS = tuple(f"T{i}" for i in range(1, 13))

TISSUE_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "lung": -850.0,
    "disc": 80.0,
    "canal": 20.0,
    "posterior": 400.0,
    "cortical": 700.0,
    "rib": 350.0,
    # Endplates: painted apart from the side walls only for phantoms with a given cortex (make_spine_phantom's
    # cortical_mm / endplate_mm), where both take the HU of their partial volume instead.
    "endplate": 700.0,
}
# Tissue codes of Phantom.tissue; trabecular bone of level with VerSe label v has code TRABECULAR + v.
AIR, FAT, SOFT_TISSUE, LUNG, DISC, CANAL, POSTERIOR, CORTICAL, RIB, ENDPLATE = range(10)
TRABECULAR = 10
TISSUE_CODES = {name: code for code, name in enumerate(TISSUE_HU)}

CORTICAL_MM = 1.5
RIB_RADIUS_MM = 4.0
TRUNK_SEMI_AXES_MM = (170.0, 125.0)
FAT_MM = 15.0
BODY_CENTRE_Y_MM = 40.0  # vertebral bodies sit in the posterior half of the trunk

# Per-level geometry at key levels (index in PHANTOM_LEVELS), linearly interpolated in between:
# body lateral and AP semi-axes, body height, height of the disc below, canal semi-axes, pedicle width,
# transverse process length, spinous process length (mm).
_KEYS = {
    0: (11.0, 8.0, 14.0, 5.0, 12.0, 7.0, 5.0, 18.0, 30.0),  # C7
    1: (12.5, 9.0, 16.0, 4.0, 10.0, 7.5, 5.5, 16.0, 28.0),  # T1
    4: (13.5, 11.0, 18.0, 4.5, 8.5, 8.0, 6.0, 15.0, 28.0),  # T4
    8: (15.0, 13.0, 20.0, 5.0, 8.5, 8.0, 6.0, 15.0, 28.0),  # T8
    12: (20.0, 15.0, 24.0, 7.0, 10.0, 8.5, 7.0, 10.0, 26.0),  # T12
    13: (21.0, 16.0, 26.0, 9.0, 10.5, 9.0, 8.0, 15.0, 25.0),  # L1
    15: (23.0, 17.0, 27.0, 10.0, 11.0, 9.0, 8.0, 25.0, 25.0),  # L3
    17: (25.0, 17.0, 27.0, 10.0, 12.0, 9.0, 8.0, 20.0, 22.0),  # L5
    18: (26.0, 17.0, 26.0, 0.0, 12.0, 8.0, 8.0, 0.0, 12.0),  # S1
}
# Thorax size (fraction of the full rib-cage ellipse) per rib level: the upper thorax is narrow.
_THORAX_SCALE = {"T1": 0.55, "T2": 0.72, "T3": 0.84, "T4": 0.92, "T5": 0.97}
_RIB_CAGE_MM = (140.0, 82.0)  # semi-axes of the rib centre line at full size
_RIB_CAGE_POSTERIOR_Y = 77.0  # most posterior point of the rib cage (the rib angles lie just inside it)
_RIB_ANGLE_X = 55.0
_RIB_DROP_MM = 35.0
_MEDIASTINUM_HALF_WIDTH = 45.0

_DIRECTIONS = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}


def default_trabecular_hu() -> dict:
    """Default trabecular HU per level: 230 HU at C7 falling linearly to 150 HU at L5 (whole HU)."""
    names = PHANTOM_LEVELS[:-1]
    hu = {name: float(round(230 - 80 * n / (len(names) - 1))) for n, name in enumerate(names)}
    hu["S1"] = 145.0
    return hu


@dataclass
class Phantom:
    """A synthetic CT and its exact truth.

    Attributes
    ----------
    volume : Volume
        HU, array shape (z, y, x), int16 by default.
    body_labels : np.ndarray of uint8, shape (z, y, x)
        Vertebral bodies C7-L5 (cortical shell included) in VerSe numbering; the sacrum is not in it.
    vertebra_labels : np.ndarray of uint8, shape (z, y, x)
        Whole vertebrae (body and posterior elements) in VerSe numbering, sacrum = 26.
    rib_labels : np.ndarray of uint8, shape (z, y, x)
        Each rib carries the VerSe label of the vertebra it articulates with (T1 = 8 ... T12 = 19).
    tissue : np.ndarray of uint8, shape (z, y, x)
        Tissue code per voxel (``TISSUE_CODES``; trabecular bone of label v is ``TRABECULAR + v``).
    trabecular_hu : dict of str to float
        True trabecular HU (before noise) per level present.
    noise_sd : float
        SD of the added Gaussian noise, HU.
    """

    volume: object
    body_labels: np.ndarray
    vertebra_labels: np.ndarray
    rib_labels: np.ndarray
    tissue: np.ndarray
    trabecular_hu: dict
    noise_sd: float
    levels: tuple = field(default=())

    @property
    def labels(self) -> np.ndarray:
        """The body label map (what the segmenter must produce); alias of ``body_labels``."""
        return self.body_labels

    def save_nifti(self, ct_path, labels_path=None, vertebra_labels_path=None):
        """Write the CT (and optionally the body / whole-vertebra label maps) as NIfTI (RAS, nibabel)."""
        from analysis.imaging.volume import save_nifti

        save_nifti(self.volume, ct_path)
        if labels_path is not None:
            save_nifti(self.body_labels, labels_path, like=self.volume, dtype=np.uint8)
        if vertebra_labels_path is not None:
            save_nifti(self.vertebra_labels, vertebra_labels_path, like=self.volume, dtype=np.uint8)

    def save_dicom(self, folder, **kwargs):
        """Write the CT as a DICOM series with :func:`analysis.imaging.dicom_writer.write_ct_series`."""
        from analysis.imaging.dicom_writer import write_ct_series

        return write_ct_series(self.volume, folder, **kwargs)


# -- geometry ------------------------------------------------------------------------------------------
@dataclass
class _Vertebra:
    name: str
    label: int
    zc: float
    height: float
    a: float
    b: float
    disc_below: float
    canal_a: float
    canal_b: float
    pedicle_width: float
    transverse_length: float
    spinous_length: float

    @property
    def top(self):
        return self.zc + self.height / 2

    @property
    def bottom(self):
        return self.zc - self.height / 2

    @property
    def canal_y(self):
        return BODY_CENTRE_Y_MM + self.b + self.canal_b


def _stack(levels) -> list:
    keys = sorted(_KEYS)
    table = np.array([_KEYS[k] for k in keys])
    out = []
    top = 0.0
    for name in levels:
        n = PHANTOM_LEVELS.index(name)
        a, b, h, disc, ca, cb, pw, tp, sp = (float(np.interp(n, keys, table[:, c])) for c in range(9))
        label = SACRUM_LABEL if name == "S1" else VERSE_LABEL[name]
        out.append(_Vertebra(name, label, top - h / 2, h, a, b, disc, ca, cb, pw, tp, sp))
        top -= h + disc
    return out


# Primitives: world bounding box and an inside test on broadcast coordinate arrays.
class _Shape:
    def __init__(self, lo, hi, inside):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        self.inside = inside


def _ellipse(cx, cy, a, b):
    return lambda x, y: ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _cylinder(cx, cy, a, b, z0, z1):
    inside = _ellipse(cx, cy, a, b)
    return _Shape((cx - a, cy - b, z0), (cx + a, cy + b, z1), lambda x, y, z: inside(x, y) & (z >= z0) & (z <= z1))


def _box(x0, x1, y0, y1, z0, z1):
    return _Shape(
        (x0, y0, z0),
        (x1, y1, z1),
        lambda x, y, z: (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1),
    )


def _capsule(p0, p1, radius):
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    length2 = float(d @ d)

    def inside(x, y, z):
        t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2
        t = np.clip(t, 0.0, 1.0)
        return (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2 <= radius**2

    return _Shape(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius, inside)


def _arch(v: _Vertebra, z0, z1, thickness=5.0):
    """Lamina and the lateral walls of the canal: a half ring behind the canal's front edge."""
    yk = v.canal_y
    outer = _ellipse(0.0, yk, v.canal_a + thickness, v.canal_b + thickness)
    inner = _ellipse(0.0, yk, v.canal_a, v.canal_b)
    y0 = yk - 0.3 * v.canal_b
    return _Shape(
        (-v.canal_a - thickness, y0, z0),
        (v.canal_a + thickness, yk + v.canal_b + thickness, z1),
        lambda x, y, z: outer(x, y) & ~inner(x, y) & (y >= y0) & (z >= z0) & (z <= z1),
    )


def _thorax_scale(name):
    return _THORAX_SCALE.get(name, 1.0)


def _rib_cage(scale):
    """Centre (y) and semi-axes of the rib centre line at a thorax scale."""
    ra, rb = _RIB_CAGE_MM[0] * scale, _RIB_CAGE_MM[1] * scale
    return _RIB_CAGE_POSTERIOR_Y - rb, ra, rb


def _rib_polyline(v: _Vertebra, side: int) -> np.ndarray:
    """Centre line of one rib, shape (n, 3) LPS mm; side +1 = left, -1 = right."""
    r = RIB_RADIUS_MM
    y0 = BODY_CENTRE_Y_MM
    zr = v.zc + 0.25 * v.height
    tp_front = v.canal_y - 3.0
    tp_tip = v.canal_a + v.pedicle_width + v.transverse_length
    gap = 1.5
    # A 2 mm joint space lateral to the body and the pedicle root.
    head = (max(v.a, v.canal_a + v.pedicle_width) + 2.0 + r, y0 + 0.5 * v.b)
    tubercle = (max(tp_tip - 6.0, head[0] + 2.0), tp_front - r - gap)
    beyond_tip = (tp_tip + r + gap, tp_front - r - gap)
    cy, ra, rb = _rib_cage(_thorax_scale(v.name))
    theta0 = np.arcsin(min(_RIB_ANGLE_X / ra, 1.0))
    number = int(v.name[1:])
    if number <= 7:
        theta1 = np.pi - np.arcsin(min(30.0 / ra, 1.0))
    elif number <= 10:
        theta1 = np.pi - np.arcsin(min(75.0 / ra, 1.0))
    elif number == 11:
        theta1 = np.pi / 2 + 0.2
    else:
        theta1 = np.pi / 2 - 0.3
    theta = np.linspace(theta0, theta1, max(int(np.ceil((theta1 - theta0) * ra / 5.0)), 2))
    drop = _RIB_DROP_MM * (theta - theta0) / (np.pi - theta0)
    arc = np.stack([ra * np.sin(theta), cy + rb * np.cos(theta), zr - drop], axis=1)
    start = np.array([(*head, zr), (*tubercle, zr), (*beyond_tip, zr)])
    points = np.concatenate([start, arc])
    points[:, 0] *= side
    return points


# -- the generator -------------------------------------------------------------------------------------
class _Canvas:
    """Index grid + affine; paints shapes into the tissue and label arrays chunk by chunk."""

    def __init__(self, shape, affine, max_chunk_voxels=4_000_000):
        self.shape = tuple(int(n) for n in shape)
        self.affine = affine
        self.inverse = np.linalg.inv(affine)
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        self.body = np.zeros(self.shape, dtype=np.uint8)
        self.vertebra = np.zeros(self.shape, dtype=np.uint8)
        self.rib = np.zeros(self.shape, dtype=np.uint8)
        self.max_chunk_voxels = max_chunk_voxels

    def _index_box(self, lo, hi):
        corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = (self.inverse @ corners.T)[:3]
        lo_i = np.floor(ijk.min(axis=1) - 1e-6).astype(int)
        hi_i = np.ceil(ijk.max(axis=1) + 1e-6).astype(int)
        box = []
        for axis, n in zip((2, 1, 0), self.shape):  # ijk -> array axes (k, j, i)
            start, stop = max(lo_i[axis], 0), min(hi_i[axis] + 1, n)
            if start >= stop:
                return None
            box.append((start, stop))
        return box

    def _coordinates(self, box):
        # Only the index axes that move a coordinate enter it, so axis-aligned grids keep broadcast
        # (thin) coordinate arrays and the inside tests stay cheap.
        k = np.arange(*box[0], dtype=np.float64)[:, None, None]
        j = np.arange(*box[1], dtype=np.float64)[None, :, None]
        i = np.arange(*box[2], dtype=np.float64)[None, None, :]
        coords = []
        for row in range(3):
            c = self.affine[row, 3] + np.zeros((1, 1, 1))
            for index, col in ((i, 0), (j, 1), (k, 2)):
                if self.affine[row, col] != 0.0:
                    c = c + self.affine[row, col] * index
            coords.append(c)
        return coords

    def paint(self, shape: _Shape, tissue, body=0, vertebra=0, rib=0):
        box = self._index_box(shape.lo, shape.hi)
        if box is None:
            return
        plane = (box[1][1] - box[1][0]) * (box[2][1] - box[2][0])
        step = max(1, self.max_chunk_voxels // max(plane, 1))
        for k0 in range(box[0][0], box[0][1], step):
            sub = [(k0, min(k0 + step, box[0][1])), box[1], box[2]]
            x, y, z = self._coordinates(sub)
            inside = np.broadcast_to(shape.inside(x, y, z), tuple(b - a for a, b in sub))
            if not inside.any():
                continue
            sl = tuple(slice(a, b) for a, b in sub)
            for array, value in ((self.tissue, tissue), (self.body, body), (self.vertebra, vertebra), (self.rib, rib)):
                array[sl][inside] = value


def _grid(levels_stack, shape, spacing, orientation, center_mm):
    orientation = orientation.upper()
    if len(orientation) != 3 or any(c not in _DIRECTIONS for c in orientation):
        raise ValueError(f"orientation must be 3 letters from LRPASI (directions of i, j, k), got {orientation!r}")
    directions = np.array([_DIRECTIONS[c] for c in orientation])  # rows: i, j, k
    if abs(np.linalg.det(directions)) != 1.0:
        raise ValueError(f"orientation {orientation!r} names the same anatomical axis twice")
    dz, dy, dx = (float(s) for s in spacing)
    if min(dz, dy, dx) <= 0:
        raise ValueError(f"spacing must be positive (dz, dy, dx) mm, got {spacing}")
    step = (dx, dy, dz)  # of i, j, k
    z_top = levels_stack[0].top + 25.0
    z_bottom = levels_stack[-1].bottom - (90.0 if levels_stack[-1].name == "S1" else 25.0)
    lo = np.array([-TRUNK_SEMI_AXES_MM[0] - 5.0, -TRUNK_SEMI_AXES_MM[1] - 5.0, z_bottom])
    hi = np.array([TRUNK_SEMI_AXES_MM[0] + 5.0, TRUNK_SEMI_AXES_MM[1] + 5.0, z_top])
    centre = (lo + hi) / 2 if center_mm is None else np.asarray(center_mm, dtype=np.float64)
    if shape is None:
        extent = [float(np.abs(directions[a]) @ (hi - lo)) for a in range(3)]
        n_ijk = [int(np.ceil(extent[a] / step[a])) + 1 for a in range(3)]
    else:
        n_ijk = [int(n) for n in tuple(shape)[::-1]]
    affine = np.eye(4)
    for a in range(3):
        affine[:3, a] = directions[a] * step[a]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(n_ijk) - 1) / 2.0)
    return tuple(n_ijk[::-1]), affine


def make_spine_phantom(
    shape=None,
    spacing=(1.0, 0.8, 0.8),
    levels=PHANTOM_LEVELS,
    trabecular_hu=None,
    noise_sd=20.0,
    orientation="LPS",
    center_mm=None,
    dtype=np.int16,
    random_state=0,
    cortical_mm=None,
    endplate_mm=None,
) -> Phantom:
    """Build a synthetic spine CT.

    Parameters
    ----------
    shape : tuple of 3 ints, optional
        Array shape (z, y, x). Default: large enough for the whole trunk cross-section and the levels.
    spacing : tuple of 3 floats, default (1.0, 0.8, 0.8)
        Voxel size (dz, dy, dx) in mm, i.e. of the array axes (k, j, i).
    levels : sequence of str
        A contiguous run of ``PHANTOM_LEVELS`` (C7 ... L5, S1) to build, cranial first. "S1" adds the
        sacrum.
    trabecular_hu : dict of str to float, optional
        Trabecular HU per level; levels not given take :func:`default_trabecular_hu`.
    noise_sd : float, default 20.0
        SD of the white Gaussian noise added to every voxel, HU.
    orientation : str, default "LPS"
        Anatomical direction of increasing i (column), j (row) and k (slice), e.g. "LPS" (DICOM axial,
        head first), "RAS" (x and y flipped), "LPI" (slices running feet-wards), "LSP" (coronal slices).
    center_mm : tuple of 3 floats, optional
        LPS point at the centre of the grid. Default: centre of the trunk and of the levels.
    dtype : numpy dtype, default np.int16
        int16 rounds HU to whole numbers, as a CT scanner stores them; np.float32 keeps them exact.
    random_state : int or numpy Generator, default 0
        Seed of the noise.
    cortical_mm : float, optional
        Thickness of the body's cortical shell (side walls), mm. Default: a 1.5 mm shell painted by voxel
        centres at 700 HU. When given (osteoporotic bodies have a cortex of 0.5-1 mm), the shell is painted
        at least one voxel thick with the HU a scanner would read for it (partial volume): 700 HU times its
        thickness over the painted thickness, plus the marrow's share at the mean trabecular HU. (Painted by
        voxel centres, a shell thinner than a voxel would show as scattered dots.)
    endplate_mm : float, optional
        Thickness of the cortical endplates, mm (default: the shell's). Osteoporotic bodies keep bright,
        relatively thick endplates (1-2 mm, often sclerotic) while the marrow between fades. Painted like
        the shell, at least one slice thick, as tissue "endplate".

    Returns
    -------
    Phantom
    """
    from analysis.imaging.volume import Volume

    levels = tuple(levels)
    if not levels:
        raise ValueError("levels must name at least one vertebra")
    if any(name not in PHANTOM_LEVELS for name in levels):
        raise ValueError(f"levels must come from {PHANTOM_LEVELS}, got {levels}")
    first = PHANTOM_LEVELS.index(levels[0])
    if levels != PHANTOM_LEVELS[first : first + len(levels)]:
        raise ValueError(f"levels must be a contiguous cranio-caudal run of {PHANTOM_LEVELS}, got {levels}")
    truth = default_trabecular_hu()
    truth.update({k: float(v) for k, v in (trabecular_hu or {}).items()})
    truth = {name: truth[name] for name in levels}
    if noise_sd < 0:
        raise ValueError(f"noise_sd must be >= 0, got {noise_sd}")
    shell = None
    if cortical_mm is not None or endplate_mm is not None:
        t = CORTICAL_MM if cortical_mm is None else float(cortical_mm)
        e = t if endplate_mm is None else float(endplate_mm)
        if not (0 < t < 5 and 0 < e < 5):
            raise ValueError(f"cortical_mm and endplate_mm must lie in (0, 5) mm, got {cortical_mm}, {endplate_mm}")
        dz, dy, dx = (float(v) for v in spacing)
        marrow = float(np.mean(list(truth.values())))
        # Painted thickness: at least one voxel (in-plane for the side walls, along z for the endplates; the
        # phantom's slices run along z except for coronal orientations, where this is approximate).
        paint_t, paint_e = max(t, dy, dx), max(e, dz)
        shell = {
            "side_mm": paint_t, "endplate_mm": paint_e,
            "side_hu": marrow + (TISSUE_HU["cortical"] - marrow) * t / paint_t,
            "endplate_hu": marrow + (TISSUE_HU["cortical"] - marrow) * e / paint_e,
        }

    stack = _stack(levels)
    shape, affine = _grid(stack, shape, spacing, orientation, center_mm)
    canvas = _Canvas(shape, affine)
    inf = 1e6
    ta, tb = TRUNK_SEMI_AXES_MM
    canvas.paint(_cylinder(0.0, 0.0, ta, tb, -inf, inf), FAT)
    canvas.paint(_cylinder(0.0, 0.0, ta - FAT_MM, tb - FAT_MM, -inf, inf), SOFT_TISSUE)

    by_name = {v.name: v for v in stack}
    _paint_lungs(canvas, stack, by_name)
    for upper, lower in zip(stack[:-1], stack[1:]):
        a = 0.97 * (upper.a + lower.a) / 2
        b = 0.97 * (upper.b + lower.b) / 2
        canvas.paint(_cylinder(0.0, BODY_CENTRE_Y_MM, a, b, lower.top, upper.bottom), DISC)
    for v in stack:
        if v.name in RIB_LEVELS:
            for side in (1, -1):
                points = _rib_polyline(v, side)
                for p0, p1 in zip(points[:-1], points[1:]):
                    canvas.paint(_capsule(p0, p1, RIB_RADIUS_MM), RIB, rib=v.label)
    for v in stack:
        _paint_vertebra(canvas, v, truth[v.name], shell)

    lut = np.zeros(TRABECULAR + 32, dtype=np.float64)
    for name, code in TISSUE_CODES.items():
        lut[code] = TISSUE_HU[name]
    for v in stack:
        lut[TRABECULAR + v.label] = truth[v.name]
    if shell is not None:
        lut[CORTICAL] = shell["side_hu"]
        lut[ENDPLATE] = shell["endplate_hu"]
    rng = np.random.default_rng(random_state)
    out_dtype = np.dtype(dtype)
    hu = np.empty(shape, dtype=out_dtype)
    plane = shape[1] * shape[2]
    step = max(1, 4_000_000 // plane)
    for k0 in range(0, shape[0], step):
        values = lut[canvas.tissue[k0 : k0 + step]]
        if noise_sd > 0:
            values += noise_sd * rng.standard_normal(values.shape)
        if np.issubdtype(out_dtype, np.integer):
            info = np.iinfo(out_dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        hu[k0 : k0 + step] = values
    meta = {"source": "phantom", "noise_sd": float(noise_sd), "random_state": repr(random_state), "contrast": False}
    volume = Volume(array=hu, affine=affine, convention="LPS", meta=meta)
    return Phantom(
        volume=volume,
        body_labels=canvas.body,
        vertebra_labels=canvas.vertebra,
        rib_labels=canvas.rib,
        tissue=canvas.tissue,
        trabecular_hu=truth,
        noise_sd=float(noise_sd),
        levels=levels,
    )


def _paint_lungs(canvas, stack, by_name):
    ribbed = [v for v in stack if v.name in RIB_LEVELS]
    if not ribbed:
        return
    # Apex 15 mm above the top of T1 (above the first rib), base at the top of T11 (the diaphragm).
    top = by_name["T1"].top + 15.0 if "T1" in by_name else ribbed[0].top + 30.0
    bottom = by_name["T11"].top if "T11" in by_name else ribbed[-1].bottom
    z_knots = np.array([v.zc for v in ribbed][::-1])
    s_knots = np.array([_thorax_scale(v.name) for v in ribbed][::-1])
    margin = RIB_RADIUS_MM + 6.0

    def inside(x, y, z):
        scale = np.interp(z, z_knots, s_knots)  # constant beyond the end levels
        cy, ra, rb = _rib_cage(scale)
        ellipse = ((x / (ra - margin)) ** 2 + ((y - cy) / (rb - margin)) ** 2) <= 1.0
        return ellipse & (np.abs(x) > _MEDIASTINUM_HALF_WIDTH) & (z >= bottom) & (z <= top)

    ra, rb = _RIB_CAGE_MM
    canvas.paint(_Shape((-ra, _RIB_CAGE_POSTERIOR_Y - 2 * rb, bottom), (ra, _RIB_CAGE_POSTERIOR_Y, top), inside), LUNG)


def _paint_vertebra(canvas, v: _Vertebra, trabecular_hu, shell=None):
    y0 = BODY_CENTRE_Y_MM
    yk = v.canal_y
    label = v.label
    body_label = 0 if v.name == "S1" else label
    sacrum = v.name == "S1"
    # Canal first (continuous through the disc below), so that the arch and the body bound it.
    canvas.paint(_cylinder(0.0, yk, v.canal_a, v.canal_b, v.bottom - v.disc_below, v.top), CANAL)
    z_arch = (v.zc - 0.35 * v.height, v.zc + 0.4 * v.height)
    # Pedicles: from the back of the body to the arch, upper part of the body.
    z_ped = (v.zc - 0.15 * v.height, v.zc + 0.4 * v.height)
    for side in (1, -1):
        x0, x1 = sorted((side * v.canal_a, side * (v.canal_a + v.pedicle_width)))
        canvas.paint(_box(x0, x1, y0 + 0.5 * v.b, yk + 0.3 * v.canal_b, *z_ped), POSTERIOR, vertebra=label)
    canvas.paint(_arch(v, *z_arch), POSTERIOR, vertebra=label)
    # Transverse processes (none on S1: the alae take their place).
    if v.transverse_length > 0:
        z_tp = (v.zc, v.zc + 0.3 * v.height)
        x_in = v.canal_a + v.pedicle_width
        for side in (1, -1):
            x0, x1 = sorted((side * x_in, side * (x_in + v.transverse_length)))
            canvas.paint(_box(x0, x1, yk - 3.0, yk + 4.0, *z_tp), POSTERIOR, vertebra=label)
    # Spinous process, from the back of the arch.
    y_sp = yk + v.canal_b + 4.0
    width = 3.0 if v.name.startswith(("C", "T")) else 4.0
    canvas.paint(
        _box(-width, width, y_sp, y_sp + v.spinous_length, v.zc - 0.45 * v.height, v.zc + 0.1 * v.height),
        POSTERIOR,
        vertebra=label,
    )
    if sacrum:
        # Alae beside S1, then S2-S5 tapering and curving back (bone, no cortex/trabecular split).
        for side in (1, -1):
            x0, x1 = sorted((side * 0.6 * v.a, side * (v.a + 40.0)))
            canvas.paint(_box(x0, x1, y0 - 0.2 * v.b, yk + 10.0, v.bottom, v.top), POSTERIOR, vertebra=label)
        z = v.bottom
        for n in range(1, 5):
            height = 18.0
            canvas.paint(
                _cylinder(0.0, y0 + 8.0 * n, v.a * 0.8**n, v.b * 0.9**n, z - height, z),
                POSTERIOR,
                vertebra=label,
            )
            z -= height
    # Body last: cortical shell as the whole body, then the trabecular core inside it.
    t = e = CORTICAL_MM
    canvas.paint(_cylinder(0.0, y0, v.a, v.b, v.bottom, v.top), CORTICAL, body=body_label, vertebra=label)
    if shell is not None:
        t, e = shell["side_mm"], shell["endplate_mm"]
        for z0, z1 in ((v.bottom, v.bottom + e), (v.top - e, v.top)):
            canvas.paint(_cylinder(0.0, y0, v.a - t, v.b - t, z0, z1), ENDPLATE, body=body_label, vertebra=label)
    canvas.paint(
        _cylinder(0.0, y0, v.a - t, v.b - t, v.bottom + e, v.top - e),
        TRABECULAR + label,
        body=body_label,
        vertebra=label,
    )

"""The one CT volume type of bmdsite, and loading/saving it.

A :class:`Volume` carries HU voxels together with their geometry, so that no step of the pipeline
(segmentation, measurement, viewer, export) can lose track of spacing, origin or orientation.

Conventions (fixed for the whole product):

- ``array`` is indexed ``array[k, j, i]``, shape ``(z, y, x)``: ``k`` walks the slices, ``j`` the rows and
  ``i`` the columns of a DICOM image.
- ``affine`` maps the column vector ``(i, j, k, 1)`` to DICOM patient coordinates in mm, LPS (x towards the
  patient's left, y towards posterior, z towards head). Its columns 0, 1, 2 are therefore the steps of one
  column, one row and one slice.
- NIfTI files are RAS (nibabel's affine); the data on disk is indexed ``[i, j, k]``. Loading flips x and y
  and transposes to ``(z, y, x)``; saving does the exact inverse, so a round trip is lossless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# LPS <-> RAS is a sign flip of x and y, and is its own inverse.
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

CONVENTIONS = ("LPS", "RAS")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image with its geometry in patient coordinates.

    Parameters
    ----------
    array : np.ndarray, shape (z, y, x)
        Voxel values; HU (float32, or int16 when exact) for CT, integers for label maps.
    affine : np.ndarray, shape (4, 4)
        Maps ``(i, j, k, 1)`` (x-index, y-index, z-index) to DICOM patient LPS coordinates in mm.
    series_uid : str
        DICOM SeriesInstanceUID of the source, or "" for NIfTI input.
    convention : {"LPS", "RAS"}
        Coordinate convention of the *source* data ("RAS" for NIfTI, "LPS" for DICOM). The affine is always
        LPS; the convention only decides how positions are reported back to the user
        (:meth:`index_to_source`).
    meta : Mapping
        Free-form facts about the acquisition (kvp, contrast, manufacturer, slice_thickness, flags, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    series_uid: str = ""
    convention: str = "LPS"
    meta: Mapping = field(default_factory=dict)

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D (z, y, x), got shape {array.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got shape {affine.shape}")
        if not np.all(np.isfinite(affine)):
            raise ValueError("Volume affine contains non-finite values")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("Volume affine is singular (zero spacing or degenerate direction)")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {self.convention!r}")
        # The affine is copied so that a caller mutating its own matrix cannot move our voxels.
        affine.setflags(write=False)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "meta", dict(self.meta))

    # -- geometry ---------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` number of voxels."""
        return self.array.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(dz, dy, dx)`` in mm (norms of the affine's slice, row and column steps)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[2]), float(norms[1]), float(norms[0]))

    @property
    def origin(self) -> np.ndarray:
        """LPS position in mm of the centre of voxel ``array[0, 0, 0]``, shape (3,)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """Unit direction cosines, shape (3, 3); column 0/1/2 is the LPS direction of increasing i/j/k."""
        m = self.affine[:3, :3]
        return m / np.linalg.norm(m, axis=0)

    def index_to_lps(self, zyx) -> np.ndarray:
        """Voxel indices to LPS mm.

        Parameters
        ----------
        zyx : array-like, shape (..., 3)
            Fractional voxel indices ``(k, j, i)`` (same order as the array axes).

        Returns
        -------
        np.ndarray, shape (..., 3)
            LPS coordinates in mm.
        """
        zyx = np.asarray(zyx, dtype=np.float64)
        if zyx.shape[-1:] != (3,):
            raise ValueError(f"indices must have a last axis of length 3 (k, j, i), got shape {zyx.shape}")
        ijk = zyx[..., ::-1]
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def index_to_source(self, zyx) -> np.ndarray:
        """Voxel indices ``(k, j, i)`` to mm in the source convention (RAS for NIfTI input), shape (..., 3)."""
        lps = self.index_to_lps(zyx)
        if self.convention == "RAS":
            lps = lps * np.array([-1.0, -1.0, 1.0])
        return lps

    def ras_affine(self) -> np.ndarray:
        """4x4 RAS affine for nibabel when the data is written as ``array.transpose(2, 1, 0)`` (i, j, k)."""
        return _LPS_RAS @ self.affine

    def with_array(self, array) -> Volume:
        """Same geometry, UID, convention and meta with a new array of the same shape (e.g. a label map)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match the volume shape {self.array.shape}")
        return replace(self, array=array)


# -- NIfTI ----------------------------------------------------------------------------------------------
def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _as_hu_dtype(data: np.ndarray) -> np.ndarray:
    """HU as int16 when that is exact, else float32."""
    if data.dtype == np.int16:
        return data
    if data.size and np.issubdtype(data.dtype, np.integer):
        if data.min() >= -32768 and data.max() <= 32767:
            return data.astype(np.int16)
        return data.astype(np.float32)
    if data.size and np.issubdtype(data.dtype, np.floating):
        # Scaled integer storage (scl_slope/scl_inter) often yields whole HU: keep it compact.
        if np.all(np.isfinite(data)) and data.min() >= -32768 and data.max() <= 32767:
            as_int = data.astype(np.int16)
            if np.array_equal(as_int, data):
                return as_int
        return data.astype(np.float32, copy=False)
    return data


def load_nifti(path) -> Volume:
    """Load a 3-D NIfTI image.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    Volume
        ``array`` shape (z, y, x) with ``scl_slope``/``scl_inter`` applied (int16 when exact, else float32),
        ``affine`` converted from nibabel's RAS to LPS, ``convention="RAS"``.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise ValueError(f"{path}: not a readable NIfTI file ({exc})") from exc
    shape = img.shape
    # Trailing singleton dimensions (x, y, z, 1) are common in exported label maps.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ValueError(f"{path}: expected a 3-D image, got shape {img.shape}")
    # dataobj applies scl_slope/scl_inter and keeps the stored dtype when there is no scaling.
    data = np.asanyarray(img.dataobj).reshape(shape)
    data = _as_hu_dtype(data)
    # (i, j, k) Fortran order on disk becomes a C-contiguous (k, j, i) array without a copy.
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    affine = _LPS_RAS @ np.asarray(img.affine, dtype=np.float64)
    meta = {"source": "nifti", "path": str(path)}
    return Volume(array=array, affine=affine, series_uid="", convention="RAS", meta=meta)


def _nifti_dtype(array: np.ndarray, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)  # label maps
        if lo >= -32768 and hi <= 32767:
            return np.dtype(np.int16)
        return np.dtype(np.int32)
    return np.dtype(np.float32)


def save_nifti(volume_or_array, path, like: Volume | None = None, dtype=None) -> Path:
    """Write a volume (or an array on the grid of ``like``) as NIfTI with :meth:`Volume.ras_affine`.

    Parameters
    ----------
    volume_or_array : Volume or np.ndarray, shape (z, y, x)
    path : str or Path
        ``.nii`` or ``.nii.gz`` destination.
    like : Volume, optional
        Geometry to use when an array is given.
    dtype : numpy dtype, optional
        Stored type. Default: uint8 for labels in 0..255, int16 for other integers that fit, float32 for
        floats. Integer casts must be exact (no silent wrap-around or rounding).

    Returns
    -------
    Path
        The written file.
    """
    import nibabel as nib

    path = Path(path)
    if isinstance(volume_or_array, Volume):
        geometry = volume_or_array
        array = volume_or_array.array
    else:
        if like is None:
            raise ValueError("save_nifti needs `like` (a Volume) to take the geometry from when given an array")
        geometry = like.with_array(volume_or_array)  # checks the shape
        array = geometry.array
    if not _is_nifti(path):
        raise ValueError(f"{path}: NIfTI files must end in .nii or .nii.gz")
    target = _nifti_dtype(array, dtype)
    stored = array.astype(target, copy=False)
    if np.issubdtype(target, np.integer) and not np.array_equal(stored, array):
        raise ValueError(f"{path}: values do not fit {target} exactly; pass dtype=np.float32")
    affine = geometry.ras_affine()
    img = nib.Nifti1Image(stored.transpose(2, 1, 0), affine)
    # Both forms in scanner coordinates; nibabel reads the exact sform back, the qform is a fallback.
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_data_dtype(target)
    img.header.set_xyzt_units(xyz="mm")
    # Data is stored as-is: no scaling, so integer HU and labels come back bit for bit.
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))
    return path


# -- the one loader -------------------------------------------------------------------------------------
def load_volume(path) -> Volume:
    """Load a CT from a NIfTI file, a folder holding one DICOM series, or a single (multi-frame) DICOM file.

    This is the product's only entry point for images; DICOM goes through
    :func:`analysis.imaging.dicom.assemble_series` with all its consistency checks.
    """
    path = Path(path)
    if path.is_dir():
        from analysis.imaging.dicom import read_series_folder

        return read_series_folder(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if _is_nifti(path):
        return load_nifti(path)
    from analysis.imaging.dicom import assemble_series

    return assemble_series([path])

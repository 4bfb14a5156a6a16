"""Deterministic preprocessing for the segmentation network, and the way back to the input grid.

Every input, whatever its orientation (axial head- or feet-first, RAS-stored NIfTI, coronal, oblique) and
spacing, is resampled by SimpleITK onto the *network grid*: axes aligned with LPS (array axes (z, y, x) =
(S, P, L) in increasing index = DICOM's identity direction), isotropic or fixed spacing, covering the
input's field of view. The input's direction cosines are used exactly, so an oblique acquisition is
resampled, not snapped. HU are clipped to a window and scaled to 0..1. Probabilities go back to the input
grid by linear interpolation with the same transform, and are thresholded there, so the label map lies
exactly on the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PREPROCESSING = {"orientation": "LPS", "spacing_mm": [1.5, 1.5, 1.5], "hu_window": [-1000.0, 1500.0]}
# Outside the field of view the network sees air.
AIR_HU = -1000.0


@dataclass
class NetworkGrid:
    """Geometry of the network grid: LPS-aligned, array (z, y, x), identity direction.

    Attributes
    ----------
    origin_lps : np.ndarray, shape (3,)
        LPS mm of the centre of voxel [0, 0, 0].
    spacing_xyz : np.ndarray, shape (3,)
        Voxel size along L, P, S in mm.
    size_xyz : tuple of int
        Number of voxels along L, P, S.
    """

    origin_lps: np.ndarray
    spacing_xyz: np.ndarray
    size_xyz: tuple

    @property
    def shape(self):
        """Array shape (z, y, x)."""
        return tuple(int(n) for n in self.size_xyz[::-1])

    def reference(self):
        """An empty SimpleITK image with this geometry (the resampling reference)."""
        import SimpleITK as sitk

        image = sitk.Image([int(n) for n in self.size_xyz], sitk.sitkUInt8)
        image.SetOrigin([float(v) for v in self.origin_lps])
        image.SetSpacing([float(v) for v in self.spacing_xyz])
        image.SetDirection([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        return image


def sitk_image(volume, array=None):
    """A SimpleITK image of ``array`` (default ``volume.array``, shape (z, y, x)) with the volume's geometry.

    SimpleITK's physical point of index (i, j, k) is ``origin + D @ diag(spacing) @ (i, j, k)``: with the
    volume's LPS affine, ``D`` is the affine's 3x3 part with unit columns and ``spacing`` their norms.
    """
    import SimpleITK as sitk

    array = volume.array if array is None else array
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    m = np.asarray(volume.affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (m / spacing).flatten()])
    image.SetOrigin([float(v) for v in volume.affine[:3, 3]])
    return image


def network_grid(volume, spacing_mm) -> NetworkGrid:
    """The LPS-aligned grid of the given spacing covering the volume's voxel centres.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
    spacing_mm : sequence of 3 floats
        Network voxel size (z, y, x) = (S, P, L) in mm.
    """
    shape = np.asarray(volume.shape)
    corners = np.array([[k, j, i] for k in (0, shape[0] - 1) for j in (0, shape[1] - 1) for i in (0, shape[2] - 1)],
                       dtype=np.float64)
    lps = volume.index_to_lps(corners)
    lo, hi = lps.min(axis=0), lps.max(axis=0)
    spacing_xyz = np.asarray(spacing_mm, dtype=np.float64)[::-1]
    # Rounded to 1e-6 mm first so that an extent that is an exact multiple of the spacing (an axis-aligned
    # input of the same spacing) does not gain a voxel from floating-point noise.
    size = np.floor(np.round((hi - lo) / spacing_xyz, 6)).astype(int) + 1
    return NetworkGrid(origin_lps=lo, spacing_xyz=spacing_xyz, size_xyz=tuple(int(n) for n in size))


def window(hu, hu_window):
    """HU clipped to ``hu_window`` and scaled to 0..1 (float32)."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    return ((np.clip(np.asarray(hu, dtype=np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def resample_hu(volume, preprocessing=None):
    """HU of a CT on the network grid (linear interpolation, air outside the field of view).

    Returns
    -------
    hu : np.ndarray of float32, shape grid.shape
    grid : NetworkGrid
    """
    import SimpleITK as sitk

    preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    if str(preprocessing.get("orientation", "LPS")).upper() != "LPS":
        raise ValueError(f"network grid orientation must be LPS, got {preprocessing['orientation']!r}")
    grid = network_grid(volume, preprocessing["spacing_mm"])
    hu = sitk.Resample(sitk_image(volume, np.asarray(volume.array, dtype=np.float32)), grid.reference(),
                       sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(hu), grid


def to_network(volume, preprocessing=None, labels=None):
    """Resample a CT (and optionally its label map) onto the network grid.

    Parameters
    ----------
    volume : analysis.imaging.volume.Volume
        HU, array (z, y, x).
    preprocessing : dict, optional
        ``spacing_mm`` (z, y, x) and ``hu_window`` (low, high HU); default :data:`DEFAULT_PREPROCESSING`.
    labels : np.ndarray, shape = volume.shape, optional
        Integer label map on the input grid, resampled by nearest neighbour.

    Returns
    -------
    image : np.ndarray of float32, shape grid.shape
        Windowed intensities 0..1 on the network grid.
    grid : NetworkGrid
    labels : np.ndarray of uint8 or None
    """
    import SimpleITK as sitk

    preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    hu, grid = resample_hu(volume, preprocessing)
    image = window(hu, preprocessing["hu_window"])
    out_labels = None
    if labels is not None:
        lab = sitk.Resample(sitk_image(volume, np.asarray(labels, dtype=np.uint8)), grid.reference(), sitk.Transform(),
                            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        out_labels = sitk.GetArrayFromImage(lab)
    return image, grid, out_labels


def to_input(array, grid: NetworkGrid, volume, nearest=False):
    """Resample an array on the network grid back onto the volume's own grid.

    Parameters
    ----------
    array : np.ndarray, shape grid.shape
        A probability map (linear interpolation) or, with ``nearest``, a label map.
    grid : NetworkGrid
    volume : analysis.imaging.volume.Volume
        The input whose grid is the target.

    Returns
    -------
    np.ndarray, shape volume.shape (float32, or uint8 with ``nearest``)
    """
    import SimpleITK as sitk

    source = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8 if nearest else np.float32))
    reference = grid.reference()
    source.CopyInformation(reference)
    target = sitk_image(volume, np.zeros(volume.shape, dtype=np.uint8))
    out = sitk.Resample(source, target, sitk.Transform(), sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
                        0.0, sitk.sitkUInt8 if nearest else sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)

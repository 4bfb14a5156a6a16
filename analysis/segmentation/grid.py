"""Canonical working grid for the default segmenter: reorientation, resampling and the exact way back.

The segmenter reasons in anatomical directions (superior, posterior, left), so every input is first
permuted/flipped to the canonical array axes ``(S, P, L)``: axis 0 grows towards the head, axis 1 towards
the back, axis 2 towards the patient's left. Oblique acquisitions are snapped to the nearest axis (the
segmenter's tolerances in mm absorb a few degrees). Fine in-plane grids are then resampled to a working
spacing for speed; labels come back to the input grid by nearest neighbour with index maps, so the label
map is exactly on the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CanonicalGrid:
    """A volume resampled on the canonical ``(S, P, L)`` working grid, with the map back to the input.

    Attributes
    ----------
    hu : np.ndarray, shape (s, p, l), float32
        HU on the working grid.
    spacing : np.ndarray, shape (3,)
        Working voxel size in mm along (S, P, L).
    order : tuple of int
        ``order[c]`` is the input array axis that became canonical axis ``c``.
    flips : tuple of bool
        Whether canonical axis ``c`` runs opposite to its input axis.
    native_shape : tuple of int
        Canonical shape before resampling (input shape permuted by ``order``).
    native_spacing : np.ndarray, shape (3,)
        Input voxel size in mm along (S, P, L).
    """

    hu: np.ndarray
    spacing: np.ndarray
    order: tuple
    flips: tuple
    native_shape: tuple
    native_spacing: np.ndarray

    def _work_index(self, axis):
        """Working-grid index of every native canonical index along ``axis`` (nearest voxel centre)."""
        n_native = self.native_shape[axis]
        n_work = self.hu.shape[axis]
        centres_mm = (np.arange(n_native) + 0.5) * self.native_spacing[axis]
        idx = np.floor(centres_mm / self.spacing[axis]).astype(np.int64)
        return np.clip(idx, 0, n_work - 1)

    def to_input(self, labels: np.ndarray) -> np.ndarray:
        """Map a label array on the working grid back to the input array grid (nearest neighbour).

        Parameters
        ----------
        labels : np.ndarray, shape = ``hu.shape``

        Returns
        -------
        np.ndarray, shape = input array shape, same dtype.
        """
        return self.native_to_input(self.work_to_native(labels))

    def work_to_native(self, labels: np.ndarray) -> np.ndarray:
        """Labels on the working grid to the canonical orientation at native spacing (nearest neighbour)."""
        return labels[np.ix_(self._work_index(0), self._work_index(1), self._work_index(2))]

    def input_to_native(self, array: np.ndarray) -> np.ndarray:
        """An input-grid array permuted/flipped to the canonical orientation, native spacing (a view)."""
        native = np.asarray(array).transpose(self.order)
        for axis, flip in enumerate(self.flips):
            if flip:
                native = np.flip(native, axis=axis)
        return native

    def native_to_input(self, native: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`input_to_native` (a contiguous copy on the input grid)."""
        for axis, flip in enumerate(self.flips):
            if flip:
                native = np.flip(native, axis=axis)
        inverse = np.argsort(self.order)
        return np.ascontiguousarray(native.transpose(inverse))

    def work_to_input_index(self, zyx_work) -> np.ndarray:
        """Fractional working-grid indices, shape (..., 3), to fractional input array indices ``(k, j, i)``."""
        zyx_work = np.asarray(zyx_work, dtype=np.float64)
        native = (zyx_work + 0.5) * self.spacing / self.native_spacing - 0.5
        shape = np.asarray(self.native_shape, dtype=np.float64)
        native = np.where(np.asarray(self.flips), shape - 1 - native, native)
        out = np.empty_like(native)
        for c, axis in enumerate(self.order):
            out[..., axis] = native[..., c]
        return out


def canonical_grid(array, affine, target_mm=1.5) -> CanonicalGrid:
    """Reorient an HU array to ``(S, P, L)`` and resample fine axes to about ``target_mm``.

    Parameters
    ----------
    array : np.ndarray, shape (z, y, x)
        HU, indexed ``[k, j, i]`` as :class:`analysis.imaging.volume.Volume`.
    affine : np.ndarray, shape (4, 4)
        Maps ``(i, j, k, 1)`` to LPS mm.
    target_mm : float
        Working voxel size for axes finer than ``0.8 * target_mm``; coarser axes keep their native size
        (resampling them finer adds no information).

    Returns
    -------
    CanonicalGrid
    """
    from scipy import ndimage

    affine = np.asarray(affine, dtype=np.float64)
    # Column 2 - a of the affine is the LPS step of array axis a (axis 0 = k, the slices).
    steps = [affine[:3, 2 - a] for a in range(3)]
    order = [None, None, None]
    flips = [False, False, False]
    for a, step in enumerate(steps):
        component = int(np.argmax(np.abs(step)))  # 0 = L, 1 = P, 2 = S
        canon = 2 - component
        if order[canon] is not None:
            raise ValueError("affine is too oblique: two array axes point along the same anatomical axis")
        order[canon] = a
        flips[canon] = bool(step[component] < 0)
    native_spacing = np.array([np.linalg.norm(steps[a]) for a in order])
    hu = np.asarray(array).transpose(order)
    for c, flip in enumerate(flips):
        if flip:
            hu = np.flip(hu, axis=c)
    native_shape = hu.shape
    spacing = np.where(native_spacing < 0.8 * target_mm, target_mm, native_spacing)
    work_shape = tuple(max(1, int(np.floor(n * s / w))) for n, s, w in zip(native_shape, native_spacing, spacing))
    spacing = np.array([n * s / m for n, s, m in zip(native_shape, native_spacing, work_shape)])
    hu = np.ascontiguousarray(hu, dtype=np.float32)
    if work_shape != native_shape:
        scale = spacing / native_spacing
        # Working voxel centre c maps to native index (c + 0.5) * scale - 0.5 (cell-centred grids).
        offset = 0.5 * scale - 0.5
        factor = scale.max()
        if factor >= 2.0:
            # Light anti-aliasing before a large decimation; sigma in native voxels per axis.
            sigma = np.where(scale >= 2.0, 0.4 * scale, 0.0)
            hu = ndimage.gaussian_filter(hu, sigma=sigma)
        hu = ndimage.affine_transform(hu, scale, offset=offset, output_shape=work_shape, order=1, mode="nearest")
    return CanonicalGrid(
        hu=hu.astype(np.float32, copy=False),
        spacing=spacing,
        order=tuple(order),
        flips=tuple(flips),
        native_shape=tuple(native_shape),
        native_spacing=native_spacing,
    )

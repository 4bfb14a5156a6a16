"""Import vertebra segmentations made by other tools (TotalSegmentator, VerSe-numbered NIfTI).

Every importer returns a label map on the image grid, array shape (z, y, x), in the product's VerSe
numbering (SPEC section 6: C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25; 0 background), and
refuses a mask that is not on the image grid (the same voxel centres; a mask stored with flipped or permuted axes is
reordered exactly) with an error naming the file: resampling a mask silently would move the ROI.

TotalSegmentator v2 numbers the spine 25 sacrum, 26 S1, 27 L5, 28 L4, ..., 31 L1, 32 T12, ..., 50 C1 (see
``shared/data/README.md``); it also writes its label table as XML in a NIfTI header extension
(``<Label Key="32">vertebrae_T12</Label>``). The table is preferred when present, so that a file written by
another TotalSegmentator task or version is read by names, not by assumed numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from analysis.segmentation.levels import LEVEL_NAMES, VERSE_LABEL

# TotalSegmentator v2 "total" task: vertebrae_C1 = 50 down to vertebrae_L5 = 27.
TOTALSEG_V2_VERTEBRAE = {50 - n: name for n, name in enumerate(LEVEL_NAMES[:24])}
VERSE_SACRUM = 26  # in VerSe data sets; not a measured level
VERSE_T13 = 28

# Grid tolerance: TotalSegmentator and nibabel store the affine as float32, so allow rounding noise.
AFFINE_ATOL_MM = 1e-3


class MaskGridError(ValueError):
    """A mask is not on the grid of the image it should label."""


def read_label_table(path) -> dict:
    """Label table ``{value: name}`` from the XML (Caret/TotalSegmentator) header extension of a NIfTI file.

    Returns an empty dict when the file has no such table.
    """
    import nibabel as nib

    img = nib.load(str(path))
    return _table_from_header(img.header)


def _table_from_header(header) -> dict:
    import xml.etree.ElementTree as ET

    table = {}
    for extension in getattr(header, "extensions", []):
        content = extension.get_content()
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        if "<LabelTable" not in str(content):
            continue
        try:
            root = ET.fromstring(str(content).strip())
        except ET.ParseError:
            continue
        for label in root.iter("Label"):
            key = label.get("Key")
            if key is not None and label.text is not None:
                table[int(key)] = label.text.strip()
    return table


def _level_of_name(name: str):
    """``"vertebrae_T12"`` -> ``"T12"``; None for anything that is not a C1-L6 vertebra."""
    match = re.fullmatch(r"(?:vertebrae?_)?([CTL]\d{1,2})", name.strip(), flags=re.IGNORECASE)
    if not match:
        return None
    level = match.group(1).upper()
    return level if level in VERSE_LABEL else None


def _load_on_grid(path, like):
    """Load a NIfTI mask and check it lies on ``like``'s grid; returns (array (z, y, x), table)."""
    import nibabel as nib

    from analysis.imaging.volume import load_nifti

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        volume = load_nifti(path)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    table = _table_from_header(nib.load(str(path)).header)
    array = volume.array if like is None else align_to_grid(volume, like, name=str(path))
    return array, table


def align_to_grid(mask_volume, like, name="mask") -> np.ndarray:
    """The mask's array on the image grid, or :class:`MaskGridError`.

    The mask is accepted when its voxel centres are exactly the image's: either the same shape and
    affine (within ``AFFINE_ATOL_MM``), or the same voxels stored in another axis order or direction
    (converters such as dicom2nifti, used before TotalSegmentator, often flip rows). The latter is undone
    by transposing and flipping the array: no interpolation, every label stays on its voxel. Anything
    else (other spacing, origin, field of view) is refused: resampling a mask would move the ROI.

    Parameters
    ----------
    mask_volume, like : Volume
    name : str
        What to call the mask in the message (its file name).

    Returns
    -------
    np.ndarray, shape of ``like`` (z, y, x)
    """
    mask_affine = np.asarray(mask_volume.affine, dtype=np.float64)
    image_affine = np.asarray(like.affine, dtype=np.float64)
    if tuple(mask_volume.shape) == tuple(like.shape):
        if float(np.max(np.abs(mask_affine - image_affine))) <= AFFINE_ATOL_MM:
            return np.asarray(mask_volume.array)
    # Image index (i, j, k) -> mask index: a signed permutation with integer offsets if the grids coincide.
    transform = np.linalg.inv(mask_affine) @ image_affine
    rotation = transform[:3, :3]
    signed_perm = np.round(rotation)
    offsets = np.round(transform[:3, 3])
    mask_ijk_shape = tuple(mask_volume.shape)[::-1]
    image_ijk_shape = tuple(like.shape)[::-1]
    coincide = (
        np.all(np.abs(rotation - signed_perm) * max(mask_volume.spacing) <= AFFINE_ATOL_MM)
        and np.all(np.abs(transform[:3, 3] - offsets) * max(mask_volume.spacing) <= AFFINE_ATOL_MM)
        and np.all(np.abs(signed_perm).sum(axis=0) == 1)
        and np.all(np.abs(signed_perm).sum(axis=1) == 1)
    )
    if coincide:
        perm = [int(np.flatnonzero(signed_perm[:, a])[0]) for a in range(3)]  # mask axis of image axis a
        signs = [signed_perm[perm[a], a] for a in range(3)]
        coincide = all(mask_ijk_shape[perm[a]] == image_ijk_shape[a] for a in range(3)) and all(
            offsets[perm[a]] == (0 if signs[a] > 0 else image_ijk_shape[a] - 1) for a in range(3)
        )
    if not coincide:
        if tuple(mask_volume.shape) != tuple(like.shape):
            raise MaskGridError(
                f"{name}: mask shape {tuple(mask_volume.shape)} (z, y, x) does not match the image shape "
                f"{tuple(like.shape)}"
            )
        difference = float(np.max(np.abs(mask_affine - image_affine)))
        raise MaskGridError(
            f"{name}: mask affine differs from the image affine by up to {difference:.4g} mm (spacing, "
            f"orientation or origin); it is not on the image grid"
        )
    ijk = np.asarray(mask_volume.array).transpose(2, 1, 0).transpose(perm)
    for axis in range(3):
        if signs[axis] < 0:
            ijk = np.flip(ijk, axis=axis)
    return np.ascontiguousarray(ijk.transpose(2, 1, 0))


def _remap(array, mapping: dict) -> np.ndarray:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise ValueError("label map must hold integer labels")
        array = array.astype(np.int64)
    lut_size = max(int(array.max(initial=0)), max(mapping, default=0)) + 1
    if array.size and array.min() < 0:
        raise ValueError("label map holds negative labels")
    lut = np.zeros(lut_size, dtype=np.uint8)
    for source, target in mapping.items():
        lut[source] = target
    return lut[array]


def from_totalsegmentator(path_or_array, like=None, table=None) -> np.ndarray:
    """Vertebra labels of a TotalSegmentator multi-label map, in VerSe numbering.

    Parameters
    ----------
    path_or_array : str, Path or np.ndarray
        A TotalSegmentator NIfTI (the ``total`` task multi-label file, or its vertebrae-only subset), or an
        array already on the image grid, shape (z, y, x).
    like : Volume, optional
        The image; a file must lie on its grid (else :class:`MaskGridError` naming the file).
    table : dict of int to str, optional
        Label table to use; default: the one in the file's header extension, else TotalSegmentator v2.

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)
        C1-L5 in VerSe numbering; organs, sacrum and S1 are dropped (S1 and the sacrum are not measured
        levels).
    """
    if isinstance(path_or_array, np.ndarray):
        array = path_or_array
        if like is not None and array.shape != tuple(like.shape):
            raise MaskGridError(f"mask shape {array.shape} does not match the image shape {tuple(like.shape)}")
        header_table = {}
    else:
        array, header_table = _load_on_grid(path_or_array, like)
    table = table or header_table or TOTALSEG_V2_VERTEBRAE
    mapping = {}
    for value, name in table.items():
        level = _level_of_name(name) if name.lower().startswith("vertebra") or name in VERSE_LABEL else None
        if level is not None:
            mapping[int(value)] = VERSE_LABEL[level]
    return _remap(array, mapping)


def from_verse(path, like=None) -> np.ndarray:
    """A VerSe-numbered vertebra label NIfTI, checked and returned as uint8 (z, y, x).

    Parameters
    ----------
    path : str or Path
        NIfTI with C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24, L6 = 25 (the VerSe challenge's sacrum, 26, is
        dropped; its T13, 28, is refused).
    like : Volume, optional
        The image; the mask must lie on its grid.

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)

    Raises
    ------
    MaskGridError
        Not on the image grid.
    ValueError
        Values that are not VerSe vertebra labels, or a header label table that contradicts VerSe
        numbering (e.g. a TotalSegmentator file given where VerSe numbering is expected).
    """
    array, table = _load_on_grid(path, like)
    for value, name in table.items():
        level = _level_of_name(name)
        if level is not None and VERSE_LABEL[level] != value:
            raise ValueError(
                f"{path}: label {value} is named {name!r} in the file, which is VerSe label {VERSE_LABEL[level]}; "
                f"this is not VerSe numbering (a TotalSegmentator file? import it with from_totalsegmentator)"
            )
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{path}: label map holds non-integer values")
        array = array.astype(np.int64)
    values = set(int(v) for v in np.unique(array)) - {0}
    if VERSE_T13 in values:
        raise ValueError(f"{path}: label 28 (a 13th thoracic vertebra in VerSe) is not supported; relabel it")
    unknown = sorted(v for v in values - {VERSE_SACRUM} if not 1 <= v <= 25)
    if unknown:
        raise ValueError(f"{path}: values {unknown} are not VerSe vertebra labels (1-25)")
    out = array.astype(np.uint8)
    out[out == VERSE_SACRUM] = 0
    return out


def restrict_to_body(vertebra_labels, body_mask, body_label=1) -> np.ndarray:
    """Vertebra labels kept only inside the vertebral-body mask.

    Parameters
    ----------
    vertebra_labels : np.ndarray of int, shape (z, y, x)
        Whole vertebrae (VerSe numbering).
    body_mask : np.ndarray, shape (z, y, x)
        Boolean body mask, or a label map in which ``body_label`` marks bodies (TotalSegmentator's
        ``vertebrae_body`` task: 1 body, 2 intervertebral disc).
    body_label : int, default 1

    Returns
    -------
    np.ndarray, shape (z, y, x), dtype of ``vertebra_labels``
    """
    vertebra_labels = np.asarray(vertebra_labels)
    body_mask = np.asarray(body_mask)
    if vertebra_labels.shape != body_mask.shape:
        raise MaskGridError(
            f"body mask shape {body_mask.shape} does not match the vertebra label shape {vertebra_labels.shape}"
        )
    inside = body_mask if body_mask.dtype == np.bool_ else body_mask == body_label
    return np.where(inside, vertebra_labels, 0).astype(vertebra_labels.dtype, copy=False)

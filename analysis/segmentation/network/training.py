"""Training the body network: cases from the site, CT augmentation, per-level held-out Dice, checkpoints.

Training cases (chosen per run and recorded with the version) come from:

- ``{"kind": "phantom", ...}``: :func:`analysis.imaging.phantom.make_spine_phantom` with the given levels,
  orientation, noise, seed and ``trabecular_scale`` (< 1: osteoporotic marrow). The generator has no
  contrast or gantry tilt, so neither is varied here;
- ``{"kind": "nifti", "ct": PATH, "labels": PATH, "format": "verse" | "totalsegmentator",
  "body": PATH}``: imported label maps (VerSe or TotalSegmentator numbering), restricted to the vertebral
  bodies by ``body`` (TotalSegmentator's ``vertebrae_body`` mask, label 1) where given;
- reviewed measurement runs, loaded by the caller (``analysis.tasks``) and passed as ready
  :class:`TrainingCase` objects.

Every epoch draws ``steps_per_epoch`` batches of random crops (two thirds centred on a body voxel) with
augmentation (intensity scale and offset, Gaussian noise, left-right mirroring), then measures the held-out
Dice per level and writes a checkpoint. Randomness is seeded per (seed, epoch), so a run resumed from the
checkpoint of epoch e repeats exactly what an uninterrupted run would have done from epoch e + 1 on (CPU).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from analysis.segmentation.levels import LEVEL_OF_LABEL

DEFAULT_TRAINING = {"steps_per_epoch": 50, "batch_size": 2, "learning_rate": 1e-3, "crop_size": [96, 96, 96]}


@dataclass
class TrainingCase:
    """One case on the network grid.

    Attributes
    ----------
    name : str
    image : np.ndarray of float32, shape (z, y, x)
        Windowed intensities 0..1.
    levels : np.ndarray of uint8, shape (z, y, x)
        VerSe body labels (0 background); the network learns ``levels > 0``.
    """

    name: str
    image: np.ndarray
    levels: np.ndarray


def case_from_volume(name, volume, body_levels, preprocessing):
    """A :class:`TrainingCase` from a Volume and its VerSe body label map on the same grid."""
    from .preprocess import to_network

    image, _, levels = to_network(volume, preprocessing, labels=body_levels)
    return TrainingCase(name=name, image=image, levels=levels)


def load_source(source, preprocessing):
    """A :class:`TrainingCase` for one source description (see the module docstring)."""
    kind = source.get("kind")
    if kind == "phantom":
        from analysis.imaging.phantom import default_trabecular_hu, make_spine_phantom

        levels = tuple(source.get("levels", ("T11", "T12", "L1", "L2")))
        scale = float(source.get("trabecular_scale", 1.0))
        hu = {k: v * scale for k, v in default_trabecular_hu().items()}
        phantom = make_spine_phantom(spacing=tuple(source.get("spacing", (2.0, 1.5, 1.5))), levels=levels,
                                     trabecular_hu=hu, noise_sd=float(source.get("noise_sd", 20.0)),
                                     orientation=source.get("orientation", "LPS"),
                                     random_state=int(source.get("seed", 0)))
        name = source.get("name") or f"phantom-{'-'.join(levels[::max(1, len(levels) - 1)])}-s{source.get('seed', 0)}"
        return case_from_volume(name, phantom.volume, phantom.body_labels, preprocessing)
    if kind == "nifti":
        from analysis.imaging.volume import load_nifti
        from analysis.segmentation.external import from_totalsegmentator, from_verse, restrict_to_body

        volume = load_nifti(source["ct"])
        fmt = source.get("format", "verse")
        if fmt == "verse":
            labels = from_verse(source["labels"], like=volume)
        elif fmt == "totalsegmentator":
            labels = from_totalsegmentator(source["labels"], like=volume)
        else:
            raise ValueError(f"{source['labels']}: unknown label format {fmt!r} (verse or totalsegmentator)")
        if source.get("body"):
            body = load_nifti(source["body"])
            labels = restrict_to_body(labels, np.asarray(body.array), body_label=1)
        return case_from_volume(source.get("name") or str(source["ct"]), volume, labels, preprocessing)
    raise ValueError(f"unknown training source kind {kind!r} (phantom or nifti)")


def _crop(case, size, rng):
    """A random crop (image, target) of ``size``, padded with air; two thirds centred on a body voxel."""
    image, target = case.image, (case.levels > 0).astype(np.int64)
    size = np.asarray(size)
    shape = np.asarray(image.shape)
    fg = np.flatnonzero(target) if rng.random() < 2 / 3 else np.empty(0)
    if len(fg):
        centre = np.array(np.unravel_index(int(fg[rng.integers(len(fg))]), image.shape))
    else:
        centre = np.array([rng.integers(n) for n in shape])
    start = centre - size // 2
    out_img = np.zeros(tuple(size), dtype=np.float32)
    out_tgt = np.zeros(tuple(size), dtype=np.int64)
    src = tuple(slice(max(0, s), min(n, s + c)) for s, n, c in zip(start, shape, size))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    out_img[dst] = image[src]
    out_tgt[dst] = target[src]
    return out_img, out_tgt


def _augment(image, rng):
    """CT augmentation on a windowed crop: scanner calibration (scale, offset), noise, mirroring."""
    image = image * rng.normal(1.0, 0.05) + rng.normal(0.0, 0.02)
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.02), size=image.shape)
    if rng.random() < 0.5:
        image = image[:, :, ::-1]  # left-right mirror: the spine is nearly symmetric
        return np.ascontiguousarray(image, dtype=np.float32), True
    return image.astype(np.float32), False


def level_dice(prediction, levels):
    """Held-out Dice per level of a binary body prediction.

    Each slice (axis 0, S on the network grid) is given to the level whose body centroid is nearest in
    height; the Dice of level v compares the prediction within v's slices with v's body.

    Returns
    -------
    dict of str to float
    """
    present = [int(v) for v in np.unique(levels) if v and int(v) in LEVEL_OF_LABEL]
    if not present:
        return {}
    heights = np.array([np.nonzero(levels == v)[0].mean() for v in present])
    owner = np.array(present)[np.argmin(np.abs(np.arange(levels.shape[0])[:, None] - heights[None, :]), axis=1)]
    out = {}
    for v in present:
        slab = owner == v
        truth = levels[slab] == v
        pred = prediction[slab]
        denom = int(truth.sum()) + int(pred.sum())
        out[LEVEL_OF_LABEL[v]] = round(2.0 * float((truth & pred).sum()) / denom, 4) if denom else 1.0
    return out


def evaluate(model, cases, inference, device="cpu"):
    """Held-out Dice per case and level, and per level averaged over cases."""
    from .inference import predict_probability

    per_case = {}
    for case in cases:
        prob = predict_probability(model, case.image, inference, device)
        per_case[case.name] = level_dice(prob >= float(inference.get("threshold", 0.5)), case.levels)
    by_level = {}
    for dice in per_case.values():
        for level, d in dice.items():
            by_level.setdefault(level, []).append(d)
    per_level = {k: round(float(np.mean(v)), 4) for k, v in by_level.items()}
    mean = round(float(np.mean(list(per_level.values()))), 4) if per_level else None
    return {"dice_per_level": per_level, "mean_dice": mean, "cases": per_case}


@dataclass
class TrainingOutcome:
    """Weights (``torch.save`` of the state dict), the log (events, oldest first) and held-out metrics."""

    weights: bytes
    log: list
    metrics: dict


def train(train_cases, held_out, *, architecture, inference, training=None, epochs, seed, attempt=0,
          load_checkpoint=lambda: None, save_checkpoint=lambda epoch, data: None, progress=None, device="cpu"):
    """Train the body network, resuming from the last checkpoint when there is one.

    Parameters
    ----------
    train_cases, held_out : list of TrainingCase
    architecture, inference, training : dict
        :data:`.architecture.DEFAULT_ARCHITECTURE`, :data:`.inference.DEFAULT_INFERENCE`,
        :data:`DEFAULT_TRAINING`.
    epochs, seed : int
    attempt : int
        The job attempt running this (recorded in the log, so a resumed run shows both attempts).
    load_checkpoint : callable () -> bytes or None
    save_checkpoint : callable (epoch, bytes)
        Called after every epoch.
    progress : callable (fraction, message), optional
    device : {"cpu", "cuda"}

    Returns
    -------
    TrainingOutcome
    """
    import torch
    from monai.losses import DiceCELoss

    from .architecture import build_network
    from .inference import resolve_device

    training = {**DEFAULT_TRAINING, **(training or {})}
    report = progress or (lambda fraction, message="": None)
    device = resolve_device(device)
    if not train_cases:
        raise ValueError("no training cases")
    torch.manual_seed(seed)
    model = build_network(architecture).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=float(training["learning_rate"]))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    start, log, metrics = 0, [], {}
    blob = load_checkpoint()
    if blob:
        state = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        start, log, metrics = int(state["epoch"]), list(state["log"]), dict(state["metrics"])
    log.append({"event": "start", "attempt": int(attempt), "from_epoch": start})
    steps = int(training["steps_per_epoch"])
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        # Seeded per epoch: a resumed run draws exactly what the uninterrupted run would have drawn.
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 100003 + epoch)
        model.train()
        losses = []
        for step in range(steps):
            batch = [_crop(train_cases[int(rng.integers(len(train_cases)))], training["crop_size"], rng)
                     for _ in range(int(training["batch_size"]))]
            images, targets = [], []
            for image, target in batch:
                image, mirrored = _augment(image, rng)
                images.append(image)
                targets.append(np.ascontiguousarray(target[:, :, ::-1]) if mirrored else target)
            x = torch.from_numpy(np.stack(images)[:, None]).to(device)
            y = torch.from_numpy(np.stack(targets)[:, None]).to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            report(((epoch - 1) + (step + 1) / (steps + 1)) / epochs,
                   f"epoch {epoch}/{epochs}, step {step + 1}/{steps}, loss {losses[-1]:.4f}")
        model.eval()
        metrics = evaluate(model, held_out, inference, device) if held_out else {}
        entry = {"event": "epoch", "epoch": epoch, "attempt": int(attempt), "loss": round(float(np.mean(losses)), 5),
                 "held_out_dice": metrics.get("dice_per_level", {}), "mean_held_out_dice": metrics.get("mean_dice"),
                 "seconds": round(time.perf_counter() - t0, 2)}
        log.append(entry)
        buffer = io.BytesIO()
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimiser.state_dict(), "log": log,
                    "metrics": metrics}, buffer)
        save_checkpoint(epoch, buffer.getvalue())
        report(epoch / epochs, f"epoch {epoch}/{epochs}: loss {entry['loss']:.4f}, held-out Dice "
                               f"{entry['mean_held_out_dice']}; checkpoint {epoch} saved")
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return TrainingOutcome(weights=buffer.getvalue(), log=log, metrics=metrics)

"""Training the body network: cases from the site, CT augmentation, per-level held-out Dice, checkpoints.

Training cases (chosen per run and recorded with the version) come from:

- ``{"kind": "phantom", ...}``: :func:`analysis.imaging.phantom.make_spine_phantom` with the given levels,
  orientation, noise, seed and ``trabecular_scale`` (< 1: osteoporotic marrow). The generator itself has
  no vessels and no tilt; ``contrast_hu`` paints a contrast-filled aorta in front of the bodies
  (:func:`paint_aorta`) and ``tilt_deg`` tilts the whole phantom in the sagittal plane (its affine is
  rotated, so the network grid sees an inclined spine, as with a tilted gantry or a lordotic segment);
- ``{"kind": "nifti", "ct": PATH, "labels": PATH, "format": "verse" | "totalsegmentator",
  "body": PATH}``: imported label maps (VerSe or TotalSegmentator numbering), restricted to the vertebral
  bodies by ``body`` (TotalSegmentator's ``vertebrae_body`` mask, label 1) where given; without a body
  mask, ``"bodies": "derive"`` keeps the part of each whole vertebra in front of its canal
  (:func:`bodies_of_vertebrae`), else the whole vertebrae are learnt as they are;
- reviewed measurement runs (``{"kind": "reviewed"}`` expands to the cases accepted in review at
  submission), loaded by the caller (``analysis.tasks``) and passed as ready :class:`TrainingCase` objects.

Every epoch draws ``steps_per_epoch`` batches of random crops (``foreground_fraction`` of them, default two
thirds, centred on a body voxel) with augmentation (intensity scale and offset, Gaussian noise, left-right
mirroring), optimises Dice + cross-entropy with AdamW at the epoch's rate of a cosine schedule, then measures
the held-out Dice per level and writes a checkpoint. Randomness is seeded per (seed, epoch), so a run resumed from the
checkpoint of epoch e repeats exactly what an uninterrupted run would have done from epoch e + 1 on (CPU).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from analysis.segmentation.levels import LEVEL_OF_LABEL

DEFAULT_TRAINING = {"steps_per_epoch": 50, "batch_size": 2, "learning_rate": 1e-3, "crop_size": [96, 96, 96],
                    "optimizer": "adamw", "weight_decay": 1e-4, "lr_schedule": "cosine",
                    "foreground_fraction": 2 / 3}
# The learning rate of the last epoch under the cosine schedule, as a fraction of ``learning_rate``.
COSINE_FLOOR = 0.05


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


def case_from_volume(name, volume, body_levels, preprocessing, derive_bodies=False):
    """A :class:`TrainingCase` from a Volume and its VerSe body label map on the same grid.

    With ``derive_bodies`` the label map holds whole vertebrae and only their bodies are kept
    (:func:`bodies_of_vertebrae`, on the network grid).
    """
    from .preprocess import to_network

    image, grid, levels = to_network(volume, preprocessing, labels=body_levels)
    if derive_bodies:
        levels = bodies_of_vertebrae(levels, grid.spacing_xyz[::-1])
    return TrainingCase(name=name, image=image, levels=levels)


# A vertebral foramen is 12-25 mm across (about 100-400 mm^2); smaller holes in a slice of a vertebra label
# are marrow gaps of an automatic label map, not the canal.
MIN_FORAMEN_MM2 = 40.0


def bodies_of_vertebrae(levels, spacing):
    """The vertebral bodies of whole-vertebra labels on an LPS-aligned grid (axes S, P, L).

    The body is the part of a vertebra in front of its canal. In every axial slice where the vertebra's
    label closes round the canal (the vertebral foramen: the largest hole of at least
    :data:`MIN_FORAMEN_MM2` in the filled label), the front wall of the canal is its most anterior row; a
    slice without a closed ring (endplates, or a ring opened by the label) takes the median front wall of
    that vertebra, and a vertebra that never closes round its canal takes the front wall interpolated in
    height from the other vertebrae. The voxels of the vertebra in front of that row are its body: the
    posterior arch, processes and most of the pedicles fall behind it (the pedicle roots that reach in
    front of the canal stay). Checked against TotalSegmentator's own body mask on example_ct (test).
    Without any closed ring the labels are returned unchanged.

    Parameters
    ----------
    levels : np.ndarray of uint8, shape (s, p, l)
        VerSe labels of whole vertebrae; rows (axis 1) grow towards the back.
    spacing : sequence of 3 floats
        Voxel size along (S, P, L), mm.

    Returns
    -------
    np.ndarray of uint8, shape (s, p, l)
    """
    from scipy import ndimage

    pixel_mm2 = float(spacing[1]) * float(spacing[2])
    values = [int(v) for v in np.unique(levels) if v]
    boxes = ndimage.find_objects(levels)
    fronts = {}
    for value in values:
        box = boxes[value - 1]
        vert = levels[box] == value
        found = {}
        for z in range(vert.shape[0]):
            ring = vert[z]
            holes, n = ndimage.label(ndimage.binary_fill_holes(ring) & ~ring)
            if n == 0:
                continue
            sizes = ndimage.sum_labels(np.ones(ring.shape), holes, np.arange(1, n + 1))
            if sizes.max() * pixel_mm2 < MIN_FORAMEN_MM2:
                continue
            rows = np.nonzero(holes == int(np.argmax(sizes)) + 1)[0]
            found[z + box[0].start] = int(rows.min()) + box[1].start
        fronts[value] = found
    pooled = sorted((z, row) for found in fronts.values() for z, row in found.items())
    if not pooled:
        return levels.copy()
    pooled_z = np.array([z for z, _ in pooled], dtype=float)
    pooled_row = np.array([row for _, row in pooled], dtype=float)
    out = np.zeros_like(levels)
    rows = np.arange(levels.shape[1])
    for value in values:
        box = boxes[value - 1]
        vert = levels[box] == value
        z = np.arange(box[0].start, box[0].stop)
        found = fronts[value]
        if found:
            median = float(np.median(list(found.values())))
            front = np.array([found.get(int(k), median) for k in z])
        else:
            front = np.interp(z, pooled_z, pooled_row)
        view = out[box]
        view[vert & (rows[box[1]][None, :, None] < front[:, None, None])] = value
    return out


def tilt_volume(volume, degrees):
    """The same CT rotated by ``degrees`` about the left-right axis through its centre (its affine only).

    The array and its labels stay as they are; resampled onto the network grid they show an inclined spine.
    """
    from dataclasses import replace

    a = np.radians(float(degrees))
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    affine = np.asarray(volume.affine, dtype=np.float64).copy()
    centre = volume.index_to_lps((np.asarray(volume.shape, dtype=np.float64) - 1.0) / 2.0)
    affine[:3, :3] = rotation @ affine[:3, :3]
    affine[:3, 3] = rotation @ (affine[:3, 3] - centre) + centre
    return replace(volume, affine=affine)


# A contrast-filled abdominal aorta: about 22 mm across, its centre some 20 mm in front of the front of the
# bodies and 15 mm to the patient's left of the midline (the lower thoracic and lumbar course).
AORTA_RADIUS_MM = 11.0
AORTA_FRONT_MM = 20.0
AORTA_LEFT_MM = 15.0


def paint_aorta(case, spacing, contrast_hu, hu_window, noise_sd=20.0, seed=0):
    """A :class:`TrainingCase` with a contrast-filled aorta painted in front of its bodies (not a label).

    Dense contrast next to the bodies is what makes a body mask leak; the network must learn to leave it.
    The aorta follows the bodies (their centre per slice, interpolated between bodies) at the position of
    :data:`AORTA_FRONT_MM` and :data:`AORTA_LEFT_MM`, with ``contrast_hu`` plus Gaussian noise.
    """
    from .preprocess import window

    body = case.levels > 0
    z_with = np.flatnonzero(body.any(axis=(1, 2)))
    if len(z_with) == 0:
        return case
    sz, sy, sx = (float(v) for v in spacing)
    front = np.array([np.nonzero(body[z].any(axis=1))[0].min() for z in z_with], dtype=float)
    centre_x = np.array([np.nonzero(body[z])[1].mean() for z in z_with])
    z_all = np.arange(case.image.shape[0])
    cy = np.interp(z_all, z_with, front) - AORTA_FRONT_MM / sy
    cx = np.interp(z_all, z_with, centre_x) + AORTA_LEFT_MM / sx
    yy, xx = np.mgrid[: case.image.shape[1], : case.image.shape[2]]
    rng = np.random.default_rng(seed)
    image = case.image.copy()
    lo, hi = (float(v) for v in hu_window)
    for z in z_all:
        disk = ((yy - cy[z]) * sy) ** 2 + ((xx - cx[z]) * sx) ** 2 <= AORTA_RADIUS_MM ** 2
        disk &= ~body[z]
        hu = float(contrast_hu) + rng.normal(0.0, noise_sd, int(disk.sum()))
        image[z][disk] = window(hu, (lo, hi))
    return TrainingCase(name=case.name, image=image, levels=case.levels)


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
        volume = phantom.volume
        if float(source.get("tilt_deg", 0.0)):
            volume = tilt_volume(volume, float(source["tilt_deg"]))
        case = case_from_volume(name, volume, phantom.body_labels, preprocessing)
        if source.get("contrast_hu") is not None:
            from .preprocess import DEFAULT_PREPROCESSING

            preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
            case = paint_aorta(case, preprocessing["spacing_mm"], float(source["contrast_hu"]),
                               preprocessing["hu_window"], noise_sd=float(source.get("noise_sd", 20.0)),
                               seed=int(source.get("seed", 0)))
        return case
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
        derive = source.get("bodies") == "derive" and not source.get("body")
        if source.get("bodies") not in (None, "derive", "as_labelled"):
            raise ValueError(f"{source['labels']}: 'bodies' must be 'derive' or 'as_labelled', got {source['bodies']!r}")
        return case_from_volume(source.get("name") or str(source["ct"]), volume, labels, preprocessing,
                                derive_bodies=derive)
    raise ValueError(f"unknown training source kind {kind!r} (phantom or nifti)")


def _crop(case, size, rng, foreground_fraction=2 / 3):
    """A random crop (image, target) of ``size``, padded with air; ``foreground_fraction`` of them centred on a
    body voxel (as MONAI's ``RandCropByPosNegLabeld`` with pos : neg = 2 : 1), the rest anywhere."""
    image, target = case.image, (case.levels > 0).astype(np.int64)
    size = np.asarray(size)
    shape = np.asarray(image.shape)
    fg = np.flatnonzero(target) if rng.random() < foreground_fraction else np.empty(0)
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


def make_optimiser(model, training):
    """``training["optimizer"]``: "adamw" (decoupled weight decay ``weight_decay``) or "adam"."""
    import torch

    name = str(training.get("optimizer", "adamw")).lower()
    lr = float(training["learning_rate"])
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(training.get("weight_decay", 1e-4)))
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ValueError(f"unknown optimizer {name!r} (adamw or adam)")


def learning_rate(training, epoch, epochs):
    """Learning rate of ``epoch`` (1-based): constant, or a cosine from ``learning_rate`` down to
    :data:`COSINE_FLOOR` of it at the last epoch. A function of the epoch alone, so a resumed run uses the
    same rates as an uninterrupted one without a scheduler state in the checkpoint."""
    base = float(training["learning_rate"])
    schedule = str(training.get("lr_schedule", "cosine")).lower()
    if schedule == "constant" or epochs <= 1:
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {schedule!r} (cosine or constant)")
    t = (epoch - 1) / (epochs - 1)
    # A Python float: the checkpoint (optimizer state) is read back with torch.load(weights_only=True), which
    # refuses numpy scalars.
    return float(base * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + np.cos(np.pi * t))))


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
    optimiser = make_optimiser(model, training)
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
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(training, epoch, epochs)
        model.train()
        losses = []
        for step in range(steps):
            batch = [_crop(train_cases[int(rng.integers(len(train_cases)))], training["crop_size"], rng,
                           float(training["foreground_fraction"])) for _ in range(int(training["batch_size"]))]
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

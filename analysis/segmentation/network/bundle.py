"""External MONAI bundles from a local folder, mapped to the product's levels by a label-map file.

A site that has the weights of a MONAI bundle (for example the model zoo's whole-body CT segmentation,
whose vertebra classes follow TotalSegmentator v1 names) points ``--segmenter`` at the bundle folder.
Nothing is downloaded. The folder holds, in MONAI's bundle layout:

- ``configs/inference.json`` (or ``.yaml``) with ``network_def``, instantiated by
  :class:`monai.bundle.ConfigParser`;
- ``models/model.pt``: the ``state_dict``;
- ``bmdsite_labels.json``, written by the site: ``{"labels": {"<class>": "<name>"}, "spacing_mm": [z, y, x],
  "hu_window": [low, high], "roi_size": [z, y, x]}``. A name is ``"body"`` (bodies named by the anatomy
  rules) or a vertebra (``"L1"``, ``"vertebrae_L1"`` as TotalSegmentator v1 writes it); other classes
  (organs) are ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

LABEL_MAP_FILE = "bmdsite_labels.json"


class BundleError(ValueError):
    """A bundle folder that cannot be used; the message names the file."""


def is_bundle(path) -> bool:
    """Whether ``path`` is a folder that looks like a MONAI bundle (has ``configs/``)."""
    return Path(path).is_dir() and (Path(path) / "configs").is_dir()


def class_levels(table, source="labels"):
    """``{class: "body" | level}`` from a label-map table, dropping classes that are not vertebrae."""
    from analysis.segmentation.external import _level_of_name

    out = {}
    for key, name in table.items():
        try:
            cls = int(key)
        except (TypeError, ValueError):
            raise BundleError(f"{source}: class {key!r} is not an integer") from None
        if str(name).strip().lower() == "body":
            out[cls] = "body"
            continue
        level = _level_of_name(str(name))
        if level is not None:
            out[cls] = level
    if not out:
        raise BundleError(f"{source}: no class is mapped to 'body' or to a vertebra level")
    return out


def load_bundle(folder):
    """A :class:`.segmenter.NetworkSegmenter` for a MONAI bundle folder.

    Raises
    ------
    BundleError
        Missing config, weights or label map, or a label map that maps nothing to our levels.
    """
    from monai.bundle import ConfigParser

    from .inference import DEFAULT_INFERENCE
    from .preprocess import DEFAULT_PREPROCESSING
    from .segmenter import NetworkSegmenter

    folder = Path(folder)
    configs = [folder / "configs" / f"inference.{ext}" for ext in ("json", "yaml", "yml")]
    config = next((c for c in configs if c.is_file()), None)
    if config is None:
        raise BundleError(f"{folder}: no configs/inference.json (or .yaml) in the bundle")
    weights_path = folder / "models" / "model.pt"
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: the bundle's weights are missing (models/model.pt)")
    label_path = folder / LABEL_MAP_FILE
    if not label_path.is_file():
        raise BundleError(f"{label_path}: missing; write it to map the bundle's classes to vertebra levels")
    try:
        label_map = json.loads(label_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{label_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(label_map.get("labels"), dict):
        raise BundleError(f"{label_path}: needs a 'labels' object mapping class numbers to names")
    levels = class_levels(label_map["labels"], source=str(label_path))
    parser = ConfigParser()
    parser.read_config(str(config))
    if "network_def" not in parser.config:
        raise BundleError(f"{config}: no 'network_def' in the bundle config")

    def factory():
        return ConfigParser(parser.get()).get_parsed_content("network_def", instantiate=True)

    weights = weights_path.read_bytes()
    preprocessing = dict(DEFAULT_PREPROCESSING)
    for key in ("spacing_mm", "hu_window"):
        if key in label_map:
            preprocessing[key] = label_map[key]
    inference = dict(DEFAULT_INFERENCE)
    for key in ("roi_size", "overlap", "sw_batch_size", "threshold"):
        if key in label_map:
            inference[key] = label_map[key]
    return NetworkSegmenter(name=f"bundle:{folder.name}", version=hashlib.sha256(weights).hexdigest()[:12],
                            weights=weights, preprocessing=preprocessing, inference=inference,
                            class_levels=levels, network_factory=factory)

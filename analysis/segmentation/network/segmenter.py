"""A trained network as a segmenter: Volume + device in, :class:`SegmentationResult` out.

Same interface as the rule-based :func:`analysis.segmentation.spine.segment_vertebrae`, so callers
(``measure_volume``, the exam pipeline) never test which kind of segmenter they hold.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import VERSE_LABEL, BodySegment

BODY = "body"


@dataclass
class NetworkSegmenter:
    """A segmentation network with its preprocessing and the meaning of its output classes.

    Parameters
    ----------
    name, version : str
        How the segmenter is recorded with each result (``segmenter_version`` is ``"name:version"``).
    weights : bytes
        ``state_dict`` as written by ``torch.save``.
    preprocessing, inference : dict
        See :mod:`.preprocess` and :mod:`.inference`.
    class_levels : dict of int to str
        Output class -> ``"body"`` (bodies named by the anatomy rules) or a level name (``"L1"``).
    architecture : dict, optional
        For :func:`.architecture.build_network`; or give ``network_factory``.
    network_factory : callable, optional
        Returns the untrained ``torch.nn.Module`` (MONAI bundles).
    """

    name: str
    version: str
    weights: bytes
    preprocessing: dict
    inference: dict
    class_levels: dict
    architecture: dict | None = None
    network_factory: object = None
    _models: dict = field(default_factory=dict, repr=False)

    def model(self, device):
        """The network with its weights, on ``device``, in eval mode (built once per device)."""
        import torch

        if device not in self._models:
            from .architecture import build_network

            net = self.network_factory() if self.network_factory is not None else build_network(self.architecture)
            state = torch.load(io.BytesIO(self.weights), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            self._models[device] = net.to(device).eval()
        return self._models[device]

    @staticmethod
    def _segments_on_input(named, probability, grid, volume, threshold):
        """Segment index per input voxel: the probability is interpolated onto the input grid and thresholded
        there (the surface at the input's resolution, not the network's voxels), within one network voxel of
        a named body, and each such voxel takes the segment of its nearest point on the body line."""
        from scipy import ndimage

        from .preprocess import to_input

        near = ndimage.binary_dilation(named.segment_grid > 0).astype(np.uint8)
        candidate = to_input(near, grid, volume, nearest=True).astype(bool)
        candidate &= to_input(probability, grid, volume) >= threshold
        out = np.zeros(volume.shape, dtype=np.uint8)
        if not candidate.any():
            return out
        kji = np.argwhere(candidate)
        lps = volume.index_to_lps(kji.astype(np.float64))
        grid_mm = (lps - grid.origin_lps)[:, ::-1]  # (S, P, L) mm from the network grid's first voxel
        out[candidate] = named.segment_of(grid_mm)
        return out

    def __call__(self, volume, device="cpu"):
        """Segment vertebral bodies of ``volume`` (HU, (z, y, x)); returns a ``SegmentationResult``."""
        from analysis.segmentation.spine import SegmentationResult

        from . import naming
        from .inference import predict_probability, resolve_device
        from .preprocess import DEFAULT_PREPROCESSING, resample_hu, to_input, window

        ran_on = resolve_device(device)
        timings = {}
        t0 = time.perf_counter()
        preprocessing = {**DEFAULT_PREPROCESSING, **self.preprocessing}
        hu, grid = resample_hu(volume, preprocessing)
        image = window(hu, preprocessing["hu_window"])
        timings["resample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        body_classes = [c for c, lvl in self.class_levels.items() if lvl == BODY]
        level_classes = {c: lvl for c, lvl in self.class_levels.items() if lvl != BODY}
        threshold = float(self.inference.get("threshold", 0.5))
        flags, notes = [], []
        if not level_classes:
            prob = predict_probability(self.model(ran_on), image, self.inference, ran_on, foreground=None)
            body = prob[body_classes].sum(axis=0)
            timings["network"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            named = naming.name_bodies(hu, grid.spacing_xyz[::-1], body, threshold)
            timings["labelling"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            segment_labels = self._segments_on_input(named, body, grid, volume, threshold)
            segments, notes, flags = named.segments, named.notes, named.flags
            labels = naming.labels_of_segments(segment_labels, segments)
            timings["resample_back"] = time.perf_counter() - t0
        else:
            # Level classes: the network names the bodies itself (a bundle trained with level classes).
            prob = predict_probability(self.model(ran_on), image, self.inference, ran_on, foreground=None)
            argmax = np.argmax(prob, axis=0).astype(np.uint8)
            lut = np.zeros(256, dtype=np.uint8)
            for c, lvl in level_classes.items():
                lut[int(c)] = VERSE_LABEL[lvl]
            timings["network"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            labels = to_input(lut[argmax], grid, volume, nearest=True)
            timings["resample_back"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            present = sorted(int(v) for v in np.unique(labels) if v)
            seg_lut = np.zeros(256, dtype=np.uint8)
            segments = []
            for v in present:
                seg_lut[v] = v - present[0] + 1
                segments.append(BodySegment(index=int(seg_lut[v]), level=[k for k, x in VERSE_LABEL.items()
                                                                          if x == v][0]))
            segment_labels = seg_lut[labels]
            notes = ["levels are the network's own classes"]
            if not present:
                flags = ["no_spine", "no_anchor"]
            timings["labelling"] = time.perf_counter() - t0
        confidence = {s.level: s.confidence for s in segments if s.level is not None and s.confidence is not None}
        return SegmentationResult(labels=labels, level_confidence=confidence, flags=flags, timings_s=timings,
                                  segmenter_version=f"{self.name}:{self.version}", notes=notes,
                                  segment_labels=segment_labels, segments=segments, device=ran_on)

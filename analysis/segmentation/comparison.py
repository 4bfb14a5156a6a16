"""Two segmenters on the same reviewed cases: body Dice per level, level agreement, paired ROI HU difference.

The reference of a case is its reviewed mask: the VerSe body label map of the run accepted in review (on the
stored series' grid). Each segmenter's output is its segment-index map (every body it found, named or not),
the level it gave each segment and each segment's trabecular ROI mean HU.

Definitions (per case, for every level L named in the reference):

- **Matched segment**: the segmenter's segment with the most voxels inside the reference body of L (none
  when no segment touches it).
- **Dice of L**: 2 |R_L ∩ S| / (|R_L| + |S|) with R_L the reference body and S the matched segment, whatever
  the segmenter called it (0 without a match). It measures the segmentation; the naming is measured by:
- **Level agreement**: the matched segment is named L. Pooled over cases: the fraction of reviewed levels
  the segmenter named the same as the reviewer.
- **ROI HU of the case**: the mean, over the reference levels where both segmenters' matched segments have a
  measured ROI, of each segmenter's ROI mean HU. The pair of the two is one case; the difference is
  A minus B.

Over cases: the Dice of each level is averaged over the cases that have the level (with their number). The
HU differences d_i (one per case) give mean difference, SD (ddof = 1), 95% limits of agreement mean -/+ 1.96
SD (Bland-Altman, :func:`analysis.stats.regression.bland_altman`) and the Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, two-sided; rank-based, as ROI differences between segmenters need not be normal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.segmentation.levels import LEVEL_OF_LABEL, level_sort_key


@dataclass
class SegmenterOutput:
    """What one segmenter made of one case.

    Attributes
    ----------
    segment_labels : np.ndarray of int, shape (z, y, x)
        Segment indices (0 background), on the reference's grid.
    levels : dict of int to str or None
        Segment index -> level name given by the segmenter.
    mean_hu : dict of int to float or None
        Segment index -> trabecular ROI mean HU.
    """

    segment_labels: np.ndarray
    levels: dict
    mean_hu: dict


def match_levels(reference_labels, output):
    """Per reference level: ``{"index", "dice", "named", "mean_hu"}`` of the matched segment (see module).

    Parameters
    ----------
    reference_labels : np.ndarray of int, shape (z, y, x)
        VerSe body labels of the reviewed mask.
    output : SegmenterOutput

    Returns
    -------
    dict of str to dict
    """
    reference = np.asarray(reference_labels)
    segments = np.asarray(output.segment_labels).astype(np.int64)
    if reference.shape != segments.shape:
        raise ValueError(f"segment map of shape {segments.shape} is not on the reference grid {reference.shape}")
    sizes = np.bincount(segments.ravel())
    matched = {}
    for value in np.unique(reference):
        level = LEVEL_OF_LABEL.get(int(value))
        if level is None:
            continue
        body = reference == value
        overlap = np.bincount(segments[body], minlength=len(sizes))
        overlap[0] = 0
        if overlap.max() == 0:
            matched[level] = {"index": None, "dice": 0.0, "named": None, "mean_hu": None}
            continue
        index = int(np.argmax(overlap))
        dice = 2.0 * float(overlap[index]) / (float(body.sum()) + float(sizes[index]))
        matched[level] = {"index": index, "dice": dice, "named": output.levels.get(index),
                          "mean_hu": output.mean_hu.get(index)}
    return matched


def compare_case(name, reference_labels, a, b):
    """One case: the matches of both segmenters per reference level and the case's paired ROI HU."""
    match_a, match_b = match_levels(reference_labels, a), match_levels(reference_labels, b)
    levels = sorted(match_a, key=level_sort_key)
    both = [lvl for lvl in levels if match_a[lvl]["mean_hu"] is not None and match_b[lvl]["mean_hu"] is not None]
    hu_a = float(np.mean([match_a[lvl]["mean_hu"] for lvl in both])) if both else None
    hu_b = float(np.mean([match_b[lvl]["mean_hu"] for lvl in both])) if both else None
    return {"case": name, "levels": [{"level": lvl, "a": match_a[lvl], "b": match_b[lvl]} for lvl in levels],
            "hu_levels": both, "hu_a": hu_a, "hu_b": hu_b}


def paired_hu(hu_a, hu_b):
    """Mean difference (A - B), SD, 95% limits of agreement and the Wilcoxon signed-rank test of the pairs."""
    from scipy import stats

    from analysis.stats.regression import bland_altman

    a, b = np.asarray(hu_a, dtype=float), np.asarray(hu_b, dtype=float)
    out = {"n": int(len(a)), "test": "Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided)"}
    if len(a) < 3:  # as for every Bland-Altman analysis of the site (analysis.stats.regression)
        out["note"] = "fewer than three cases with both ROIs measured: no limits or test"
        out["mean_difference"] = float(np.mean(a - b)) if len(a) else None
        return out
    agreement = bland_altman(b, a)  # differences "prediction minus reference": A - B
    out.update({"mean_difference": agreement.bias, "sd": agreement.sd, "loa_low": agreement.loa_low,
                "loa_high": agreement.loa_high})
    d = a - b
    if not np.any(d != 0):
        out.update({"statistic": None, "p_value": 1.0, "note": "every difference is zero"})
    else:
        result = stats.wilcoxon(a, b, alternative="two-sided")
        out.update({"statistic": float(result.statistic), "p_value": float(result.pvalue)})
    return out


def summarise(cases):
    """Over cases: Dice per level of each segmenter, level agreement of each, the paired HU statistics.

    Parameters
    ----------
    cases : list of dict
        :func:`compare_case` results.
    """
    per_level = {}
    agreement = {"a": [0, 0], "b": [0, 0]}
    for case in cases:
        for row in case["levels"]:
            entry = per_level.setdefault(row["level"], {"a": [], "b": []})
            for side in ("a", "b"):
                entry[side].append(row[side]["dice"])
                agreement[side][0] += row[side]["named"] == row["level"]
                agreement[side][1] += 1
    levels = [{"level": level, "n": len(v["a"]), "dice_a": float(np.mean(v["a"])), "dice_b": float(np.mean(v["b"]))}
              for level, v in sorted(per_level.items(), key=lambda kv: level_sort_key(kv[0]))]
    paired = [c for c in cases if c["hu_a"] is not None]
    return {
        "n_cases": len(cases),
        "levels": levels,
        "mean_dice_a": float(np.mean([lv["dice_a"] for lv in levels])) if levels else None,
        "mean_dice_b": float(np.mean([lv["dice_b"] for lv in levels])) if levels else None,
        "agreement": {side: {"agree": n_agree, "n": n, "share": n_agree / n if n else None}
                      for side, (n_agree, n) in agreement.items()},
        "hu": paired_hu([c["hu_a"] for c in paired], [c["hu_b"] for c in paired]),
    }

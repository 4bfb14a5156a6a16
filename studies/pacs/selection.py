"""Which series of a study to measure, and why (pure: works on header facts, no database, no network).

Rules, in order (SPEC section 3 and the seed study: plain CT, thin axial original slices):

1. ineligible: not CT; every image a localizer/scout; DERIVED or SECONDARY images (reformats, MPR, MIP,
   screen captures); not axial (slice normal more than :data:`AXIAL_MAX_DEGREES` from the body axis);
   slices thicker than :data:`MAX_THICKNESS_MM`; fewer than :data:`MIN_IMAGES` images;
2. among the eligible: plain before contrast-enhanced, then thinner slices, then more images (coverage),
   then the lower series number.

Every candidate gets a one-line reason ("chosen: ..." or "not chosen: ..."), shown on the selection page and
stored with the series. A coordinator may override the choice (any CT series; the assembler still refuses
a series that cannot give a trustworthy volume).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

MAX_THICKNESS_MM = 3.0
AXIAL_MAX_DEGREES = 10.0
MIN_IMAGES = 2
LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "SCANOGRAM", "TOPOGRAM"}


@dataclass
class SeriesCandidate:
    """Header facts of one series, from DICOMweb metadata or from local files."""

    series_uid: str
    study_uid: str = ""
    modality: str = ""
    description: str = ""
    number: int | None = None
    n_images: int = 0
    image_type: tuple = ()  # ImageType of most images, upper case
    n_localizers: int = 0
    normal: tuple | None = None  # unit slice normal (LPS) from ImageOrientationPatient
    thickness_mm: float | None = None
    contrast: bool = False
    notes: list = field(default_factory=list)

    @property
    def label(self) -> str:
        number = f"series {self.number}" if self.number is not None else "series"
        description = f" '{self.description}'" if self.description else ""
        return f"{number}{description} ({self.series_uid or '<empty SeriesInstanceUID>'})"

    def summary(self) -> str:
        thickness = f"{self.thickness_mm:g} mm" if self.thickness_mm is not None else "thickness unknown"
        kind = "/".join(self.image_type[:3]) or "ImageType unknown"
        return (f"{self.modality or '?'} {kind}, {thickness}, {self.n_images} images, "
                f"{'contrast' if self.contrast else 'plain'}")


@dataclass
class Selection:
    chosen: SeriesCandidate | None
    reasons: dict  # series_uid -> reason
    candidates: list
    override: bool = False

    @property
    def chosen_reason(self) -> str:
        return self.reasons.get(self.chosen.series_uid, "") if self.chosen else ""


def _ineligible(c: SeriesCandidate) -> str | None:
    if c.modality != "CT":
        return f"Modality is {c.modality or 'missing'}, not CT"
    if c.n_images and c.n_localizers == c.n_images:
        return "localizer/scout images only"
    if {"DERIVED", "SECONDARY"} & set(c.image_type[:2]):
        return f"{'/'.join(c.image_type[:2])} images (reformat, MPR/MIP or screen capture), not ORIGINAL"
    if c.normal is not None:
        angle = math.degrees(math.acos(min(1.0, abs(c.normal[2]))))
        if angle > AXIAL_MAX_DEGREES:
            return f"not axial (slice normal {angle:.0f} degrees from the body axis: sagittal/coronal)"
    if c.thickness_mm is not None and c.thickness_mm > MAX_THICKNESS_MM + 1e-6:
        return f"slices {c.thickness_mm:g} mm thick (more than {MAX_THICKNESS_MM:g} mm)"
    if c.n_images < MIN_IMAGES:
        return f"only {c.n_images} image(s)"
    return None


def _rank_key(c: SeriesCandidate):
    thickness = c.thickness_mm if c.thickness_mm is not None else math.inf
    return (c.contrast, thickness, -c.n_images, c.number if c.number is not None else math.inf, c.series_uid)


def select_series(candidates, override_uid: str | None = None) -> Selection:
    """Pick the series to measure among ``candidates`` and explain every decision.

    Parameters
    ----------
    candidates : list of SeriesCandidate
    override_uid : str, optional
        A coordinator's choice; must be one of the candidates (``ValueError`` otherwise).

    Returns
    -------
    Selection
        ``chosen`` is None when no series is eligible (and there is no override); ``reasons`` maps each
        series UID to its one-line reason.
    """
    candidates = list(candidates)
    reasons = {}
    eligible = []
    for c in candidates:
        why_not = _ineligible(c)
        if why_not:
            reasons[c.series_uid] = f"not eligible: {why_not}"
        else:
            eligible.append(c)
    eligible.sort(key=_rank_key)
    best = eligible[0] if eligible else None
    for c in eligible:
        if c is best:
            reasons[c.series_uid] = f"chosen: {c.summary()}" + (
                f"; the best of {len(eligible)} eligible series" if len(eligible) > 1 else "")
            continue
        if c.contrast and not best.contrast:
            why = "contrast-enhanced; a plain series is preferred"
        elif (c.thickness_mm or math.inf) > (best.thickness_mm or math.inf):
            why = f"thicker slices than {best.thickness_mm:g} mm"
        elif c.n_images < best.n_images:
            why = f"fewer images ({c.n_images} vs {best.n_images})"
        else:
            why = "equivalent; the lower series number was taken"
        reasons[c.series_uid] = f"not chosen: {c.summary()}: {why}"
    for c in candidates:
        if c.n_localizers and c.n_localizers < c.n_images:
            reasons[c.series_uid] += f" ({c.n_localizers} localizer image(s) mixed in)"

    if override_uid is not None:
        chosen = next((c for c in candidates if c.series_uid == override_uid), None)
        if chosen is None:
            raise ValueError(f"series {override_uid} is not in this study")
        automatic = best.series_uid if best else "none"
        reasons[chosen.series_uid] = (f"chosen by override (automatic choice: {automatic}); "
                                      f"{reasons[chosen.series_uid]}")
        return Selection(chosen=chosen, reasons=reasons, candidates=candidates, override=True)
    return Selection(chosen=best, reasons=reasons, candidates=candidates)


# -- candidates from headers ------------------------------------------------------------------------------
def _normal(iop) -> tuple | None:
    try:
        values = [float(v) for v in iop]
    except (TypeError, ValueError):
        return None
    if len(values) != 6:
        return None
    r, c = values[:3], values[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n))
    return tuple(v / norm for v in n) if norm > 0 else None


def _float(value):
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def candidate_from_headers(headers, *, series_uid: str | None = None, number=None, description=None
                           ) -> SeriesCandidate:
    """Summarise one series from its instances' headers.

    Parameters
    ----------
    headers : list of mapping-like
        One per instance, each supporting ``get(keyword)``: pydicom datasets, or DICOM JSON dicts wrapped
        by :func:`json_header`.
    """
    types = Counter()
    n_localizers = 0
    normals = Counter()
    thickness = Counter()
    contrast = False
    modality = Counter()
    first = headers[0] if headers else {}
    for h in headers:
        image_type = tuple(str(v).strip().upper() for v in (h.get("ImageType") or []))
        types[image_type] += 1
        if LOCALIZER_TYPES & set(image_type):
            n_localizers += 1
            continue
        modality[str(h.get("Modality") or "")] += 1
        normal = _normal(h.get("ImageOrientationPatient") or [])
        if normal is not None:
            normals[tuple(round(v, 3) for v in normal)] += 1
        t = _float(h.get("SliceThickness"))
        if t is not None:
            thickness[t] += 1
        agent = h.get("ContrastBolusAgent")
        contrast = contrast or bool(agent and str(agent).strip())
    if not modality and headers:
        modality[str(first.get("Modality") or "")] += 1
    main_type = types.most_common(1)[0][0] if types else ()
    if n_localizers and n_localizers < len(headers):
        main_type = next(t for t, _ in types.most_common() if not LOCALIZER_TYPES & set(t))
    number_value = number if number is not None else first.get("SeriesNumber")
    return SeriesCandidate(
        series_uid=series_uid if series_uid is not None else str(first.get("SeriesInstanceUID") or ""),
        study_uid=str(first.get("StudyInstanceUID") or ""),
        modality=modality.most_common(1)[0][0] if modality else "",
        description=description if description is not None else str(first.get("SeriesDescription") or ""),
        number=int(number_value) if _float(number_value) is not None else None,
        n_images=len(headers),
        image_type=main_type,
        n_localizers=n_localizers,
        normal=normals.most_common(1)[0][0] if normals else None,
        thickness_mm=thickness.most_common(1)[0][0] if thickness else None,
        contrast=contrast,
    )


class json_header:  # noqa: N801 (reads as a function at the call site)
    """``get(keyword)`` over a DICOM JSON dataset (WADO-RS metadata), for :func:`candidate_from_headers`."""

    def __init__(self, item: dict):
        self._item = item

    def get(self, keyword, default=None):
        from pydicom.datadict import tag_for_keyword

        tag = tag_for_keyword(keyword)
        if tag is None:
            return default
        element = self._item.get(f"{tag:08X}") or {}
        values = element.get("Value")
        if not values:
            return default
        if isinstance(values[0], dict) and "Alphabetic" in values[0]:
            values = [v.get("Alphabetic", "") for v in values]
        return values if len(values) > 1 or keyword in ("ImageType", "ImageOrientationPatient") else values[0]

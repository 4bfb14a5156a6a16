"""Assemble one CT series of DICOM slices (or one enhanced multi-frame instance) into a :class:`Volume`.

Everything real-world DICOM throws at the product is checked here, before any voxel is trusted, and every
problem becomes a :class:`DicomSeriesError` whose message names the series, the file or tag and the reason
(SPEC section 5). The checks, in order:

1. every file is readable DICOM; non-image objects (DICOMDIR, SR, ...) are skipped with a note;
2. exactly one series (several SeriesInstanceUIDs -> error listing them);
3. Modality (0008,0060) is CT;
4. localizer/scout images (ImageType contains LOCALIZER) are rejected, or excluded with a note on request;
5. one image size, one ImageOrientationPatient (within :data:`ORIENTATION_TOLERANCE`), one PixelSpacing;
6. RescaleSlope (0028,1053) and RescaleIntercept (0028,1052) present;
7. slices sorted by ImagePositionPatient projected on the slice normal (never by file name or
   InstanceNumber); duplicated positions, gantry tilt, non-collinear positions, missing slices and irregular
   spacing rejected with the positions involved;
8. a decoder for every transfer syntax ("codec missing for transfer syntax X" otherwise);
9. pixel data complete (truncated data names the file).

Pixels are decoded one slice at a time into a preallocated array, so the peak memory stays near the size of
the output volume whatever the number of slices.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.imaging.volume import Volume

# Direction cosines of two slices that differ by less than this are the same orientation (about 0.06 deg).
ORIENTATION_TOLERANCE = 1e-3
# Slice steps may differ from the nominal step by this much (mm, and fraction of the step) before the
# spacing is called irregular: scanners round positions to 0.001-0.01 mm.
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_REL = 0.01
# A slice position off the line through the slices, or a drift of the whole stack across the slice normal,
# larger than this fraction of the in-plane pixel size is a geometric fault (gantry tilt or a moved slice):
# below a quarter pixel it cannot change any measurement.
DRIFT_TOLERANCE_PIXELS = 0.25

ENHANCED_CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
}
LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "SCANOGRAM", "TOPOGRAM"}


class DicomSeriesError(ValueError):
    """A DICOM series that cannot be turned into a trustworthy volume.

    Attributes
    ----------
    series : str
        SeriesInstanceUID, or the folder / first file when the UID is empty or unknown.
    code : str
        Short machine-readable reason, e.g. ``"missing_slices"``, ``"gantry_tilt"``, ``"not_ct"``.
    files : list of str
        The files (or datasets) involved, first ones first.
    """

    def __init__(self, series: str, code: str, problem: str, files=()):
        self.series = series
        self.code = code
        self.problem = problem
        self.files = list(files)
        super().__init__(f"series {series}: {problem}")


@dataclass
class _Slice:
    """Header facts of one frame, everything needed before decoding pixels."""

    source: object  # Path or pydicom Dataset
    frame: int | None  # frame index in a multi-frame instance, None for single-frame
    name: str  # for messages
    series_uid: str
    study_uid: str
    sop_uid: str
    modality: str | None
    image_type: tuple
    rows: int | None
    cols: int | None
    iop: np.ndarray | None
    ipp: np.ndarray | None
    pixel_spacing: np.ndarray | None
    slope: float | None
    intercept: float | None
    transfer_syntax: str
    slice_thickness: float | None
    spacing_between: float | None
    header: object  # the header-only Dataset (shared by the frames of one instance), for meta
    n_frames: int = 1  # > 1 only for a multi-frame instance without functional groups (rejected)


# -- reading headers ------------------------------------------------------------------------------------
def _floats(value, n):
    """``n`` finite floats from a multi-valued element, or None when absent or malformed."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        return None
    return values


def _first(*values):
    """First value that is present (not None and not empty)."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _float(value):
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _group_value(containers, sequence, keyword):
    """First value of ``keyword`` inside ``sequence`` of the given functional-group items (per-frame first)."""
    for item in containers:
        if item is None or sequence not in item:
            continue
        seq = item[sequence].value
        if seq and keyword in seq[0]:
            return seq[0][keyword].value
    return None


def _transfer_syntax(ds) -> str:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    # Datasets built in memory (e.g. from DICOMweb) may carry no file meta; pydicom then treats them as
    # natively encoded little endian.
    return "1.2.840.10008.1.2.1"


def _slices_of(ds, source, name) -> list[_Slice]:
    """One :class:`_Slice` per frame of a header-only dataset."""
    image_type = tuple(str(v).strip().upper() for v in (ds.get("ImageType") or []))
    common = dict(
        source=source,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "").strip(),
        study_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
        sop_uid=str(ds.get("SOPInstanceUID", "") or "").strip(),
        modality=(str(ds.Modality).strip() if ds.get("Modality") else None),
        rows=ds.get("Rows"),
        cols=ds.get("Columns"),
        transfer_syntax=_transfer_syntax(ds),
    )
    sop_class = str(ds.get("SOPClassUID", ""))
    n_frames = int(ds.get("NumberOfFrames") or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if sop_class in ENHANCED_CT_SOP_CLASSES or per_frame is not None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        shared_item = shared[0] if shared else None
        out = []
        for f in range(n_frames):
            frame_item = per_frame[f] if per_frame is not None and f < len(per_frame) else None
            groups = (frame_item, shared_item)
            frame_type = _group_value(groups, "CTImageFrameTypeSequence", "FrameType")
            out.append(_Slice(
                frame=f,
                name=f"{name} frame {f + 1}",
                image_type=tuple(str(v).upper() for v in frame_type) if frame_type else image_type,
                # Legacy converted objects may keep some attributes at the top level: the fallback.
                iop=_floats(_first(_group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"),
                                   ds.get("ImageOrientationPatient")), 6),
                ipp=_floats(_first(_group_value(groups, "PlanePositionSequence", "ImagePositionPatient"),
                                   ds.get("ImagePositionPatient")), 3),
                pixel_spacing=_floats(_first(_group_value(groups, "PixelMeasuresSequence", "PixelSpacing"),
                                             ds.get("PixelSpacing")), 2),
                slope=_float(_first(_group_value(groups, "PixelValueTransformationSequence", "RescaleSlope"),
                                    ds.get("RescaleSlope"))),
                intercept=_float(_first(_group_value(groups, "PixelValueTransformationSequence",
                                                     "RescaleIntercept"), ds.get("RescaleIntercept"))),
                slice_thickness=_float(_first(_group_value(groups, "PixelMeasuresSequence", "SliceThickness"),
                                              ds.get("SliceThickness"))),
                spacing_between=_float(_first(_group_value(groups, "PixelMeasuresSequence",
                                                           "SpacingBetweenSlices"),
                                              ds.get("SpacingBetweenSlices"))),
                header=ds,
                **common,
            ))
        return out
    return [_Slice(
        frame=None,
        n_frames=n_frames,
        name=name,
        image_type=image_type,
        iop=_floats(ds.get("ImageOrientationPatient"), 6),
        ipp=_floats(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        slope=_float(ds.get("RescaleSlope")),
        intercept=_float(ds.get("RescaleIntercept")),
        slice_thickness=_float(ds.get("SliceThickness")),
        spacing_between=_float(ds.get("SpacingBetweenSlices")),
        header=ds,
        **common,
    )]


def _read_header(path: Path, label: str):
    """Header-only read of one file; ``None`` for files that are not DICOM at all."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Old files without the 128-byte preamble are still DICOM; anything else is not ours to judge.
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            return None
        return ds if "SOPClassUID" in ds else None
    except Exception as exc:
        raise DicomSeriesError(label, "unreadable", f"file {path.name}: not a readable DICOM file ({exc})",
                               [str(path)]) from exc


def _source_name(source, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    filename = getattr(source, "filename", None)
    if isinstance(filename, str) and filename:
        return Path(filename).name
    return f"dataset #{index + 1}"


# -- checks ---------------------------------------------------------------------------------------------
def _fail(label, code, problem, slices=()):
    raise DicomSeriesError(label, code, problem, [s.name for s in slices])


def _few(names, n=3) -> str:
    names = list(names)
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _check_uniform(label, slices, attr, tag, tolerance):
    missing = [s for s in slices if getattr(s, attr) is None]
    if missing:
        _fail(label, f"missing_{attr}",
              f"{tag} missing or malformed in {len(missing)} of {len(slices)} images ({_few(s.name for s in missing)})",
              missing)
    ref = getattr(slices[0], attr)
    odd = [s for s in slices if np.max(np.abs(getattr(s, attr) - ref)) > tolerance]
    if odd:
        return ref, odd
    return ref, []


def _series_label(slices, name_hint):
    uid = slices[0].series_uid if slices else ""
    if uid:
        return uid
    return f"<empty SeriesInstanceUID> ({name_hint})"


def _geometry(label, slices, pixel_spacing):
    """Sort slices along the normal and check the stack; returns (sorted slices, normal, step mm)."""
    iop = slices[0].iop
    row, col = iop[:3], iop[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2
            or abs(row @ col) > 1e-2):
        _fail(label, "bad_orientation",
              f"ImageOrientationPatient (0020,0037) {list(iop)} is not two orthonormal directions "
              f"({slices[0].name})", slices[:1])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    missing = [s for s in slices if s.ipp is None]
    if missing:
        _fail(label, "missing_position",
              f"ImagePositionPatient (0020,0032) missing or malformed in {len(missing)} images "
              f"({_few(s.name for s in missing)})", missing)
    positions = np.array([s.ipp for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[k] for k in order]
    positions = positions[order]
    along = along[order]

    steps = np.diff(along)
    # Duplicates first: they would otherwise read as a zero step of irregular spacing.
    dup = np.flatnonzero(steps < SPACING_TOLERANCE_MM)
    if dup.size:
        k = int(dup[0])
        _fail(label, "duplicate_position",
              f"{dup.size} duplicated slice position(s): {slices[k].name} and {slices[k + 1].name} both at "
              f"{along[k]:.3f} mm along the slice normal (ImagePositionPatient {list(np.round(positions[k], 3))})",
              [slices[k], slices[k + 1]])

    tolerance_drift = DRIFT_TOLERANCE_PIXELS * float(np.min(pixel_spacing))
    if len(slices) >= 2:
        span = positions[-1] - positions[0]
        lateral = span - (span @ normal) * normal
        # Residual of each position from the straight line through the first and the last slice.
        t = (along - along[0]) / (along[-1] - along[0])
        residual = np.linalg.norm(positions - (positions[0] + t[:, None] * span), axis=1)
        worst = int(np.argmax(residual))
        if residual[worst] > tolerance_drift:
            _fail(label, "position_off_line",
                  f"slice positions are not on one line: {slices[worst].name} is {residual[worst]:.2f} mm off "
                  f"the line through the first and last slice (ImagePositionPatient "
                  f"{list(np.round(positions[worst], 3))})", [slices[worst]])
        if np.linalg.norm(lateral) > tolerance_drift:
            angle = np.degrees(np.arctan2(np.linalg.norm(lateral), abs(span @ normal)))
            _fail(label, "gantry_tilt",
                  f"gantry tilt of {angle:.2f} degrees: slice positions advance {angle:.2f} degrees off the "
                  f"slice normal (stack drifts {np.linalg.norm(lateral):.2f} mm across {len(slices)} slices); "
                  f"tilted series must be resampled before use", [slices[0], slices[-1]])

    if len(slices) < 2:
        s = slices[0]
        step = s.spacing_between or s.slice_thickness or 1.0
        return slices, normal, float(step), along

    nominal = float(np.median(steps))
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_REL * nominal)
    gaps = []
    irregular = []
    for k, d in enumerate(steps):
        if abs(d - nominal) <= tolerance:
            continue
        ratio = d / nominal
        if round(ratio) >= 2 and abs(d - round(ratio) * nominal) <= tolerance * round(ratio):
            gaps.append((k, int(round(ratio)) - 1))
        else:
            irregular.append(k)
    if gaps:
        parts = [f"{n} between {along[k]:.2f} mm ({slices[k].name}) and {along[k + 1]:.2f} mm "
                 f"({slices[k + 1].name})" for k, n in gaps]
        _fail(label, "missing_slices",
              f"{sum(n for _, n in gaps)} missing slice(s) at nominal step {nominal:.3f} mm: "
              + "; ".join(parts) + " (positions along the slice normal)",
              [s for k, _ in gaps for s in (slices[k], slices[k + 1])])
    if irregular:
        parts = [f"{steps[k]:.3f} mm between {along[k]:.2f} mm ({slices[k].name}) and {along[k + 1]:.2f} mm "
                 f"({slices[k + 1].name})" for k in irregular[:5]]
        _fail(label, "irregular_spacing",
              f"irregular slice spacing: nominal step {nominal:.3f} mm, but " + "; ".join(parts)
              + (f" and {len(irregular) - 5} more" if len(irregular) > 5 else "")
              + " (positions along the slice normal)",
              [s for k in irregular for s in (slices[k], slices[k + 1])])
    # The mean step over the whole stack is the most precise estimate once all steps agree.
    step = float((along[-1] - along[0]) / (len(slices) - 1))
    return slices, normal, step, along


def _check_codecs(label, slices):
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    for tsyntax in sorted({s.transfer_syntax for s in slices}):
        uid = UID(tsyntax)
        users = [s for s in slices if s.transfer_syntax == tsyntax]
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            _fail(label, "codec_missing",
                  f"codec missing for transfer syntax {uid.name} ({tsyntax}): no decoder exists in pydicom "
                  f"({_few(s.name for s in users)})", users)
        if not decoder.is_available:
            needs = "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items()) \
                if isinstance(decoder.missing_dependencies, dict) else str(decoder.missing_dependencies)
            _fail(label, "codec_missing",
                  f"codec missing for transfer syntax {uid.name} ({tsyntax}): install one of the plugins "
                  f"({needs}) ({_few(s.name for s in users)})", users)


# -- decoding -------------------------------------------------------------------------------------------
def _load_pixels_dataset(label, source, name):
    """Full dataset of a file with its pixel data, checked for presence."""
    import pydicom

    if isinstance(source, (str, os.PathLike)):
        try:
            ds = pydicom.dcmread(source)
        except Exception as exc:
            raise DicomSeriesError(label, "truncated_pixel_data",
                                   f"file {name}: pixel data unreadable or truncated ({exc})", [name]) from exc
    else:
        ds = source
    if "PixelData" not in ds:
        # pydicom drops an encapsulated Pixel Data element whose file ends before its delimiter.
        raise DicomSeriesError(label, "truncated_pixel_data",
                               f"file {name}: Pixel Data (7FE0,0010) missing or truncated (file ends early)",
                               [name])
    return ds


def _decode(label, ds, name, frame):
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(ds, index=frame)
    except Exception as exc:
        raise DicomSeriesError(label, "truncated_pixel_data",
                               f"file {name}: pixel data truncated or undecodable ({type(exc).__name__}: {exc})",
                               [name]) from exc


def _int16_fits(slices) -> bool:
    """Whether integer HU are guaranteed by slope 1 and integral intercepts (range checked per slice)."""
    return all(s.slope == 1.0 and float(s.intercept).is_integer() and -32768 <= s.intercept <= 32767
               for s in slices)


# -- public API -----------------------------------------------------------------------------------------
def assemble_series(sources, *, series_uid: str | None = None, exclude_localizers: bool = False,
                    name: str | None = None) -> Volume:
    """Assemble one CT series into a volume in HU with its LPS geometry.

    Parameters
    ----------
    sources : iterable of str, Path or pydicom.Dataset
        The instances of the series, in any order. Files are read header-first and decoded one at a time;
        an enhanced multi-frame CT instance may be the only source.
    series_uid : str, optional
        Pick this SeriesInstanceUID out of a mixed set instead of rejecting the mix.
    exclude_localizers : bool
        Drop images whose ImageType says LOCALIZER/SCOUT (noted in ``meta["excluded"]``) instead of failing.
    name : str, optional
        What to call the series in messages when its UID is empty (e.g. the folder).

    Returns
    -------
    Volume
        ``array`` HU, shape (z, y, x), int16 when slope 1 and integral intercepts make that exact, else
        float32; ``affine`` LPS from ImageOrientationPatient, the first ImagePositionPatient, PixelSpacing and
        the measured slice step; ``meta`` with kvp, manufacturer, model, slice_thickness, contrast,
        series_uid, study_uid, n_slices, slice_step_mm, transfer_syntaxes, sop_instance_uids, flags, notes.

    Raises
    ------
    DicomSeriesError
        For every input that would not give a trustworthy volume; the message names the series, the
        file/tag and the problem.
    """
    sources = list(sources)
    hint = name or (_source_name(sources[0], 0) if sources else "no files")
    label = f"<{hint}>"
    if not sources:
        _fail(label, "no_images", "no DICOM files given")

    slices: list[_Slice] = []
    notes: list[str] = []
    for index, source in enumerate(sources):
        source_name = _source_name(source, index)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            ds = _read_header(path, label)
            if ds is None:
                notes.append(f"{source_name}: not DICOM, skipped")
                continue
            source = path
        else:
            ds = source
        if "Rows" not in ds or "Columns" not in ds:
            notes.append(f"{source_name}: no image (SOP class {ds.get('SOPClassUID', '?')}), skipped")
            continue
        slices.extend(_slices_of(ds, source, source_name))
    if not slices:
        _fail(label, "no_images", f"no CT images among {len(sources)} files ({_few(notes)})")

    # -- one series
    by_series = defaultdict(list)
    for s in slices:
        by_series[s.series_uid].append(s)
    if series_uid is not None:
        if series_uid not in by_series:
            _fail(label, "series_not_found",
                  f"SeriesInstanceUID {series_uid} not among {sorted(by_series)}")
        slices = by_series[series_uid]
    elif len(by_series) > 1:
        listing = "; ".join(f"{uid or '<empty>'} ({len(v)} images)" for uid, v in sorted(by_series.items()))
        _fail(f"<{hint}>", "several_series",
              f"{len(by_series)} series mixed (SeriesInstanceUID (0020,000E)): {listing}", slices)
    label = _series_label(slices, hint)

    # -- CT only
    modalities = Counter(s.modality for s in slices)
    not_ct = [s for s in slices if s.modality != "CT"]
    if not_ct:
        found = ", ".join(f"{m or 'missing'} ({n} images)" for m, n in modalities.items() if m != "CT")
        _fail(label, "not_ct",
              f"Modality (0008,0060) is {found}, not CT ({_few(s.name for s in not_ct)})", not_ct)

    # -- multi-frame objects must say where each frame lies
    unplaced = [s for s in slices if s.n_frames > 1]
    if unplaced:
        _fail(label, "multiframe_without_positions",
              f"file {unplaced[0].name}: NumberOfFrames (0028,0008) is {unplaced[0].n_frames} but there is no "
              "PerFrameFunctionalGroupsSequence (5200,9230) giving the frame positions", unplaced)

    # -- localizers
    localizers = [s for s in slices if LOCALIZER_TYPES & set(s.image_type)]
    if localizers:
        if not exclude_localizers or len(localizers) == len(slices):
            _fail(label, "localizer_mixed_in",
                  f"{len(localizers)} localizer/scout image(s) mixed in (ImageType (0008,0008) "
                  f"{'/'.join(localizers[0].image_type)}: {_few(s.name for s in localizers)})", localizers)
        slices = [s for s in slices if s not in localizers]
        notes.append(f"excluded {len(localizers)} localizer image(s): {_few(s.name for s in localizers)}")

    # -- one size, one orientation, one pixel spacing
    sizes = Counter((s.rows, s.cols) for s in slices)
    if len(sizes) > 1:
        (main_size, _), = sizes.most_common(1)
        odd = [s for s in slices if (s.rows, s.cols) != main_size]
        _fail(label, "size_mismatch",
              f"image size differs (Rows (0028,0010) x Columns (0028,0011)): {len(odd)} image(s) "
              f"{odd[0].rows}x{odd[0].cols} vs {main_size[0]}x{main_size[1]} ({_few(s.name for s in odd)}); "
              "a localizer or a second series mixed in?", odd)
    iop, odd = _check_uniform(label, slices, "iop", "ImageOrientationPatient (0020,0037)", ORIENTATION_TOLERANCE)
    if odd:
        _fail(label, "orientation_mismatch",
              f"ImageOrientationPatient (0020,0037) differs: {len(odd)} image(s) with "
              f"{list(np.round(odd[0].iop, 4))} vs {list(np.round(iop, 4))} ({_few(s.name for s in odd)}); "
              "a localizer or a reformat mixed in?", odd)
    pixel_spacing, odd = _check_uniform(label, slices, "pixel_spacing", "PixelSpacing (0028,0030)", 1e-4)
    if odd:
        _fail(label, "pixel_spacing_mismatch",
              f"PixelSpacing (0028,0030) differs: {list(odd[0].pixel_spacing)} vs {list(pixel_spacing)} "
              f"({_few(s.name for s in odd)})", odd)

    # -- rescale
    for attr, tag in (("slope", "RescaleSlope (0028,1053)"), ("intercept", "RescaleIntercept (0028,1052)")):
        missing = [s for s in slices if getattr(s, attr) is None]
        if missing:
            _fail(label, "missing_rescale",
                  f"{tag} missing in {len(missing)} of {len(slices)} images ({_few(s.name for s in missing)}): "
                  "stored values cannot be converted to HU", missing)

    # -- geometry
    slices, normal, step, along = _geometry(label, slices, pixel_spacing)
    _check_codecs(label, slices)

    # -- pixels, slice by slice into one preallocated array
    rows, cols = slices[0].rows, slices[0].cols
    dtype = np.int16 if _int16_fits(slices) else np.float32
    array = np.empty((len(slices), rows, cols), dtype=dtype)
    # Multi-frame sources are opened once; their frames are decoded where they belong.
    by_source = defaultdict(list)
    for k, s in enumerate(slices):
        by_source[id(s.source)].append(k)
    for ks in by_source.values():
        first = slices[ks[0]]
        ds = _load_pixels_dataset(label, first.source, first.name.split(" frame ")[0])
        for k in ks:
            s = slices[k]
            pixels = _decode(label, ds, s.name, s.frame)
            if pixels.shape != (rows, cols):
                _fail(label, "truncated_pixel_data",
                      f"file {s.name}: decoded pixel data has shape {pixels.shape}, expected {(rows, cols)}", [s])
            if array.dtype == np.int16:
                lo, hi = int(pixels.min()) + int(s.intercept), int(pixels.max()) + int(s.intercept)
                if lo < -32768 or hi > 32767:
                    # Rare: HU outside int16; keep exactness by switching the whole volume to float32 once.
                    array = array.astype(np.float32)
            if array.dtype == np.int16:
                # int16 arithmetic wraps modulo 2**16; since the result was checked to fit int16 it is exact
                # even for uint16 stored values above 32767.
                np.add(pixels, np.int16(s.intercept), out=array[k], casting="unsafe", dtype=np.int16)
            else:
                hu = pixels.astype(np.float32) if s.slope == 1.0 else pixels * np.float32(s.slope)
                np.add(hu, np.float32(s.intercept), out=array[k], casting="unsafe")
        del ds

    # -- geometry matrix
    row_dir, col_dir = iop[:3], iop[3:]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]  # i walks along a row: column spacing
    affine[:3, 1] = col_dir * pixel_spacing[0]  # j walks down a column: row spacing
    affine[:3, 2] = normal * step
    affine[:3, 3] = slices[0].ipp

    # -- meta
    ref = slices[0].header
    flags = []
    if len(slices) == 1:
        flags.append("single_slice")
    series_uid_out = slices[0].series_uid
    study_uid_out = slices[0].study_uid
    sop_uids = [s.sop_uid for s in slices]
    if not series_uid_out or not study_uid_out or not all(sop_uids):
        series_uid_out, study_uid_out, sop_uids = _replacement_uids(array, affine, slices)
        flags.append("replaced_empty_uids")
    contrast = _has_contrast(ref)
    if contrast:
        flags.append("contrast")
    meta = {
        "series_uid": series_uid_out,
        "study_uid": study_uid_out,
        "frame_of_reference_uid": str(ref.get("FrameOfReferenceUID", "") or ""),
        "n_slices": len(slices),
        "slice_step_mm": step,
        "slice_thickness": slices[0].slice_thickness,
        "kvp": _float(ref.get("KVP")),
        "manufacturer": str(ref.get("Manufacturer", "") or ""),
        "model": str(ref.get("ManufacturerModelName", "") or ""),
        "contrast": contrast,
        "image_type": list(slices[0].image_type),
        "transfer_syntaxes": sorted({s.transfer_syntax for s in slices}),
        "sop_instance_uids": sop_uids,
        "replaced_empty_uids": "replaced_empty_uids" in flags,
        "flags": flags,
        "notes": notes,
        "excluded": [n for n in notes if n.startswith("excluded")],
        "source": "dicom",
    }
    return Volume(array=array, affine=affine, series_uid=series_uid_out, convention="LPS", meta=meta)


def _has_contrast(ds) -> bool:
    """ContrastBolusAgent (0018,0010) non-empty, a ContrastBolusAgentSequence, or enhanced CT usage YES."""
    agent = ds.get("ContrastBolusAgent")
    if agent is not None and str(agent).strip():
        return True
    if ds.get("ContrastBolusAgentSequence"):
        return True
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        usage = shared[0].get("ContrastBolusUsageSequence") or []
        if any(str(item.get("ContrastBolusAgentAdministered", "")).upper() == "YES" for item in usage):
            return True
    return False


# Namespace of bmdsite's name-based UIDs (a fixed random UUID, so our UIDs never collide with others').
_UID_NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-4f5a-9b7e-2c1d0e9f8a7b")


def content_uid(*parts) -> str:
    """Deterministic DICOM UID ``2.25.<int>`` from a name-based (SHA-1, version 5) UUID of ``parts``.

    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources and returns a random UUID,
    so it cannot give the same UID twice; a version-5 UUID is the standard deterministic alternative and
    its integer form is what the 2.25 root requires (PS3.5 B.2).
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(str(p) for p in parts)).int}"


def _replacement_uids(array, affine, slices):
    """Deterministic UIDs from the content (HU voxels and geometry) for instances whose UIDs are empty.

    The same pixels and geometry always give the same UIDs, whatever the transfer syntax or file names, so
    loading an anonymised series twice cannot create two series.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
    digest.update(str(array.dtype).encode())
    digest.update(np.round(affine, 4).tobytes())
    content = digest.hexdigest()
    series = slices[0].series_uid or content_uid("series", content)
    study = slices[0].study_uid or content_uid("study", content)
    sops = [s.sop_uid or content_uid("instance", content, k) for k, s in enumerate(slices)]
    return series, study, sops


def read_series_folder(path, **kwargs) -> Volume:
    """Assemble the one DICOM series stored under ``path`` (searched recursively).

    Files that are not DICOM (README, DICOMDIR without images, hidden files) are skipped with a note in
    ``meta["notes"]``. Keyword arguments go to :func:`assemble_series`.
    """
    path = Path(path)
    if not path.is_dir():
        raise DicomSeriesError(f"<{path}>", "no_images", f"{path} is not a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DicomSeriesError(f"<{path}>", "no_images", f"folder {path} holds no files")
    kwargs.setdefault("name", str(path))
    return assemble_series(files, **kwargs)

"""Write a :class:`Volume` as a synthetic single-frame CT DICOM series.

Used for phantoms (exact HU known by construction), the demo, the segmentation tests and, through its
fault options, for producing every kind of bad series the assembler must reject (SPEC section 5).

The stored values are ``(HU - intercept) / slope`` as uint16 (int16 when negative values are needed), so
integer HU round-trip exactly through :func:`analysis.imaging.dicom.assemble_series`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from analysis.imaging.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_NATIVE = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian (pydicom deflates the whole dataset)
}


class DicomWriteError(ValueError):
    """The volume cannot be written as asked (no encoder for the syntax, HU not representable, ...)."""


def _encoder_check(transfer_syntax):
    from pydicom.pixels import get_encoder
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    if str(uid) in _NATIVE:
        return uid
    try:
        encoder = get_encoder(uid)
    except NotImplementedError as exc:
        raise DicomWriteError(f"cannot encode transfer syntax {uid.name} ({uid}): pydicom has no encoder for it"
                              ) from exc
    if not encoder.is_available:
        missing = encoder.missing_dependencies
        raise DicomWriteError(f"cannot encode transfer syntax {uid.name} ({uid}): encoder plugin missing "
                              f"({'; '.join(missing) if isinstance(missing, list) else missing})")
    return uid


def _stored_values(hu: np.ndarray, slope: float, intercept: float):
    """Stored integers for HU and the pixel representation (0 unsigned, 1 signed)."""
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    lo, hi = (stored.min(), stored.max()) if stored.size else (0, 0)
    if lo >= 0 and hi <= 65535:
        return stored.astype(np.uint16), 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype(np.int16), 1
    raise DicomWriteError(f"HU range [{hu.min()}, {hu.max()}] does not fit 16 bits with slope {slope} and "
                          f"intercept {intercept}")


def _uid(*parts) -> str:
    from analysis.imaging.dicom import content_uid

    return content_uid(*parts)


def _content_key(volume: Volume) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(volume.array).view(np.uint8).reshape(-1))
    digest.update(np.round(volume.affine, 6).tobytes())
    return digest.hexdigest()


def write_ct_series(volume: Volume, folder, transfer_syntax="1.2.840.10008.1.2.1", series_uid=None,
                    study_uid=None, patient_id="PHANTOM", modality="CT", rescale_slope=1.0,
                    rescale_intercept=-1024.0, contrast=False, extra_tags: Mapping | None = None, *,
                    file_prefix="slice", drop_slices: Iterable[int] = (),
                    shift_slice: tuple[int, float] | None = None, tilt_degrees: float = 0.0,
                    remove_rescale: bool = False, truncate_slices: Iterable[int] = (),
                    add_localizer: bool = False, second_series: bool = False) -> list[Path]:
    """Write one DICOM file per slice of ``volume`` with correct geometry tags.

    Parameters
    ----------
    volume : Volume
        HU, shape (z, y, x); slice ``k`` is written at ``affine @ (0, 0, k, 1)``.
    folder : str or Path
        Created if missing.
    transfer_syntax : str
        Explicit/Implicit VR Little Endian, Deflated, RLE Lossless, JPEG 2000 (lossless) natively or via
        pylibjpeg-openjpeg, JPEG-LS when pyjpegls is installed; anything else raises
        :class:`DicomWriteError`.
    series_uid, study_uid : str, optional
        Default: derived deterministically from the volume content (same volume, same UIDs).
    patient_id, modality, contrast, extra_tags
        ``contrast`` sets ContrastBolusAgent; ``extra_tags`` maps DICOM keywords to values set on every slice.
    rescale_slope, rescale_intercept : float
        Stored value = (HU - intercept) / slope, rounded to an integer.

    Other Parameters
    ----------------
    file_prefix : str
        Files are named ``{file_prefix}_{k:04d}.dcm``.
    drop_slices : iterable of int
        Slices not written (a missing slice).
    shift_slice : (int, float)
        Move slice ``k`` by this many mm along the slice normal (irregular spacing).
    tilt_degrees : float
        Shear the positions along the image column direction (y) by ``tan(tilt)`` per mm of z, as a tilted
        gantry does; orientation tags stay axial.
    remove_rescale : bool
        Omit RescaleSlope (0028,1053) and RescaleIntercept (0028,1052).
    truncate_slices : iterable of int
        Cut these files in the middle of their pixel data (an interrupted transfer).
    add_localizer : bool
        Add a coronal LOCALIZER image of another size to the same series.
    second_series : bool
        Also write the volume as a second series (new SeriesInstanceUID, prefix ``{file_prefix}_s2``).

    Returns
    -------
    list of Path
        The files written, slices first (in slice order), then the extras.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset

    tsyntax = _encoder_check(transfer_syntax)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = _content_key(volume)
    study_uid = study_uid or _uid("study", patient_id, key)
    series_uid = series_uid or _uid("series", patient_id, key)
    frame_uid = _uid("frame-of-reference", study_uid)

    affine = volume.affine
    dx, dy = np.linalg.norm(affine[:3, 0]), np.linalg.norm(affine[:3, 1])
    row_dir, col_dir = affine[:3, 0] / dx, affine[:3, 1] / dy
    slice_vec = affine[:3, 2]
    step = float(np.linalg.norm(slice_vec))
    normal = np.cross(row_dir, col_dir)
    stored, pixel_rep = _stored_values(volume.array, rescale_slope, rescale_intercept)
    drop = set(drop_slices)
    truncate = set(truncate_slices)
    sop_class = MR_IMAGE_STORAGE if modality == "MR" else CT_IMAGE_STORAGE

    def base_dataset(sop_uid, series):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientName = patient_id
        ds.StudyDate = "20240101"
        ds.Manufacturer = "bmdsite"
        ds.ManufacturerModelName = "synthetic phantom"
        ds.KVP = "120"
        ds.SeriesNumber = 1
        ds.PatientPosition = "HFS"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_rep
        if not remove_rescale:
            ds.RescaleSlope = f"{rescale_slope:g}"
            ds.RescaleIntercept = f"{rescale_intercept:g}"
            ds.RescaleType = "HU"
        if contrast:
            ds.ContrastBolusAgent = "IODINE"
        for keyword, value in (extra_tags or {}).items():
            setattr(ds, keyword, value)
        return ds

    def save(ds, pixels, path, cut=False):
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        if str(tsyntax) in _NATIVE:
            ds.file_meta.TransferSyntaxUID = tsyntax
        else:
            try:
                ds.compress(tsyntax)
            except Exception as exc:  # encoder plugins raise RuntimeError/ValueError with their own text
                raise DicomWriteError(f"{path.name}: encoding as {tsyntax.name} failed ({exc}); JPEG 2000 "
                                      "needs images of at least 32 x 32 pixels") from exc
        ds.save_as(path, enforce_file_format=True)
        if cut:
            # Keep the header and half of the pixel bytes, as an interrupted transfer would.
            size = path.stat().st_size
            with open(path, "r+b") as fh:
                fh.truncate(size - max(len(ds.PixelData) // 2, 16))
        return path

    def write_series(series, prefix):
        written = []
        for k in range(volume.shape[0]):
            if k in drop:
                continue
            position = affine[:3, 3] + k * slice_vec
            if shift_slice is not None and shift_slice[0] == k:
                position = position + shift_slice[1] * normal
            if tilt_degrees:
                along = (position - affine[:3, 3]) @ normal
                position = position + np.tan(np.radians(tilt_degrees)) * along * col_dir
            sop_uid = _uid("instance", series, k)
            ds = base_dataset(sop_uid, series)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.InstanceNumber = k + 1
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
            ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
            ds.SliceThickness = f"{step:.6f}"
            ds.SpacingBetweenSlices = f"{step:.6f}"
            ds.SliceLocation = f"{position @ normal:.6f}"
            written.append(save(ds, stored[k], folder / f"{prefix}_{k:04d}.dcm", cut=k in truncate))
        return written

    paths = write_series(series_uid, file_prefix)
    if add_localizer:
        # A coronal scout through the middle row: other orientation, other size, same series.
        nz, ny, nx = volume.shape
        scout = stored[::-1, ny // 2, :]
        ds = base_dataset(_uid("localizer", series_uid), series_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.InstanceNumber = nz + 1
        top = affine[:3, 3] + (nz - 1) * slice_vec + (ny // 2) * affine[:3, 1]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *(-normal))]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in top]
        ds.PixelSpacing = [f"{step:.6f}", f"{dx:.6f}"]
        ds.SliceThickness = f"{dy:.6f}"
        paths.append(save(ds, scout, folder / f"{file_prefix}_localizer.dcm"))
    if second_series:
        paths.extend(write_series(_uid("second-series", series_uid), f"{file_prefix}_s2"))
    return paths

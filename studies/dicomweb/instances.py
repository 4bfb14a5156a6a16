"""Standard CT image instances generated from a stored series' HU volume, for the site's DICOMweb endpoint.

The site stores each series as one assembled HU volume (``StoredSeries.volume``), not as the DICOM files it
came from. The endpoint serves that volume as one single-frame CT Image Storage instance per slice, made
deterministically: the same stored series always gives the same SOPInstanceUIDs, headers and pixels, so a
viewer's cache or a script's download stays valid across requests and server restarts.

Pixels are the HU themselves as signed 16-bit integers (RescaleSlope 1, RescaleIntercept 0) whenever the
volume's values are whole numbers in the int16 range, which is the case for every series assembled from CT
DICOM files; the decoded, rescaled pixels then equal the stored volume exactly. A float volume with
fractional HU (rare: a resampled NIfTI) is scaled to fill 16 bits and is exact to RescaleSlope / 2 HU.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def study_uid_of(stored):
    """The StudyInstanceUID served for a stored series (a stable one made up when the source had none)."""
    from analysis.imaging.dicom import content_uid

    return stored.study_uid or content_uid("bmdsite-dicomweb-study", stored.project_id, stored.series_uid)


def sop_uid_of(series_uid, k):
    """SOPInstanceUID of slice ``k`` (0 = first slice of the stored array) of a series."""
    from analysis.imaging.dicom import content_uid

    return content_uid("bmdsite-dicomweb-instance", series_uid, k)


def _pixels(array):
    """(int16 stored values, slope, intercept) for an HU array of shape (z, y, x)."""
    if array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= -32768 and array.max() <= 32767)):
        return array.astype(np.int16, copy=False), 1.0, 0.0
    as_int = np.rint(array)
    if np.all(np.isfinite(array)) and np.array_equal(as_int, array) and (
            array.size == 0 or (as_int.min() >= -32768 and as_int.max() <= 32767)):
        return as_int.astype(np.int16), 1.0, 0.0
    # Fractional HU: spread the range over the int16 values (exact to slope / 2 HU).
    lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
    intercept = (lo + hi) / 2.0
    slope = max((hi - lo) / 65000.0, 1e-6)
    return np.rint((array - intercept) / slope).astype(np.int16), slope, intercept


@dataclass(frozen=True, eq=False)
class SeriesInstances:
    """The instances of one stored series: shared header values, per-slice positions and the pixels.

    Attributes
    ----------
    stored_values : np.ndarray, shape (z, y, x), int16
        Stored pixel values; HU = stored * slope + intercept.
    positions : np.ndarray, shape (z, 3)
        ImagePositionPatient of each slice, LPS mm.
    """

    study_uid: str
    series_uid: str
    sop_uids: tuple
    stored_values: np.ndarray
    slope: float
    intercept: float
    positions: np.ndarray
    orientation: tuple
    pixel_spacing: tuple
    slice_step_mm: float
    header: dict

    def __len__(self):
        return len(self.sop_uids)

    def __post_init__(self):
        object.__setattr__(self, "_index", {uid: k for k, uid in enumerate(self.sop_uids)})

    def index_of(self, sop_uid):
        """The slice index of ``sop_uid``, or None when it is not an instance of this series."""
        return self._index.get(sop_uid)

    def frame_bytes(self, k):
        """Native (Explicit VR Little Endian) pixel bytes of slice ``k``: rows x columns int16."""
        return np.ascontiguousarray(self.stored_values[k]).astype("<i2", copy=False).tobytes()

    def dataset(self, k, with_pixels=True):
        """Slice ``k`` as a pydicom Dataset (with file meta), pixels included unless ``with_pixels`` is False."""
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset

        sop_uid = self.sop_uids[k]
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        for keyword, value in self.header.items():
            if value not in (None, ""):
                setattr(ds, keyword, value)
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = self.series_uid
        ds.Modality = "CT"
        ds.InstanceNumber = k + 1
        position = self.positions[k]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in self.orientation]
        normal = np.cross(np.array(self.orientation[:3]), np.array(self.orientation[3:]))
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.PixelSpacing = [f"{v:.6f}" for v in self.pixel_spacing]
        ds.SliceThickness = f"{self.slice_step_mm:.6f}"
        ds.SpacingBetweenSlices = f"{self.slice_step_mm:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = self.stored_values.shape[1:]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{self.slope:.10g}"
        ds.RescaleIntercept = f"{self.intercept:.10g}"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        if with_pixels:
            ds.PixelData = self.frame_bytes(k)
        return ds

    def instance_bytes(self, k):
        """Slice ``k`` as a DICOM Part 10 file (bytes)."""
        buffer = io.BytesIO()
        self.dataset(k).save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    def metadata(self, k, bulk_data_uri=None):
        """DICOM JSON (PS3.18 F.2) of slice ``k`` without its pixels; ``bulk_data_uri`` points at them.

        The attributes shared by all slices are converted once per series (pydicom's conversion costs about
        3 ms a slice, a second for a 300-slice series); each slice then only replaces its own values.
        """
        template = self.__dict__.get("_json_template")
        if template is None:
            template = self.dataset(0, with_pixels=False).to_json_dict()
            # The transfer syntax of the frames, as viewers read it from the metadata.
            template["00020010"] = {"vr": "UI", "Value": [EXPLICIT_VR_LITTLE_ENDIAN]}
            object.__setattr__(self, "_json_template", template)
        out = dict(template)
        position = self.positions[k]
        normal = np.cross(np.array(self.orientation[:3]), np.array(self.orientation[3:]))
        out["00080018"] = {"vr": "UI", "Value": [self.sop_uids[k]]}
        out["00200013"] = {"vr": "IS", "Value": [k + 1]}
        # Decimal strings as the Dataset writes them, so both forms of an instance agree to the digit.
        out["00200032"] = {"vr": "DS", "Value": [float(f"{v:.6f}") for v in position]}
        out["00201041"] = {"vr": "DS", "Value": [float(f"{float(position @ normal):.6f}")]}
        if bulk_data_uri:
            out["7FE00010"] = {"vr": "OW", "BulkDataURI": bulk_data_uri}
        return out


def build_instances(stored, volume, patient_id="", study_date=""):
    """:class:`SeriesInstances` of ``stored`` from its loaded :class:`~analysis.imaging.volume.Volume`."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    dx, dy = float(np.linalg.norm(affine[:3, 0])), float(np.linalg.norm(affine[:3, 1]))
    row_dir, col_dir = affine[:3, 0] / dx, affine[:3, 1] / dy
    n = volume.shape[0]
    positions = affine[:3, 3][None, :] + np.arange(n)[:, None] * affine[:3, 2][None, :]
    stored_values, slope, intercept = _pixels(np.asarray(volume.array))
    stored_values.setflags(write=False)
    meta = stored.meta or {}
    header = {
        "PatientID": patient_id, "PatientName": patient_id, "StudyDate": study_date,
        "StudyID": "1", "AccessionNumber": "", "SeriesNumber": 1, "SeriesDescription": "bmdsite stored series",
        "Manufacturer": str(meta.get("manufacturer") or ""), "ManufacturerModelName": str(meta.get("model") or ""),
        "KVP": f"{meta['kvp']:g}" if isinstance(meta.get("kvp"), (int, float)) else "",
        "FrameOfReferenceUID": meta.get("frame_of_reference_uid") or "",
        "PatientPosition": "HFS",
        "ContrastBolusAgent": "IODINE" if meta.get("contrast") else "",
    }
    return SeriesInstances(
        study_uid=study_uid_of(stored), series_uid=stored.series_uid,
        sop_uids=tuple(sop_uid_of(stored.series_uid, k) for k in range(n)),
        stored_values=stored_values, slope=slope, intercept=intercept, positions=positions,
        orientation=tuple(float(v) for v in (*row_dir, *col_dir)), pixel_spacing=(dy, dx),
        slice_step_mm=float(np.linalg.norm(affine[:3, 2])), header=header,
    )


class _SeriesCache:
    """The last few series served, decoded, per process.

    A viewer asks for hundreds of frames of one series within seconds; reading and decompressing the volume
    file for each would cost far more than the 50 ms a frame may take. Two entries bound the memory (a
    512 x 512 x 600 series is 300 MB of int16); the key holds the file name, so a replaced volume is reread.
    """

    def __init__(self, size=2):
        self.size = size
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stored):
        key = (stored.pk, stored.volume.name)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        exam = stored.exam
        patient_id = exam.patient.pseudonym if exam is not None else ""
        study_date = (exam.exam_date.strftime("%Y%m%d") if exam is not None else
                      str(stored.meta.get("study_date") or "").replace("-", ""))
        instances = build_instances(stored, stored.load_volume(), patient_id=patient_id, study_date=study_date)
        with self._lock:
            self._items[key] = instances
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return instances


series_cache = _SeriesCache()

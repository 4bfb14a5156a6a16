"""QIDO-RS and WADO-RS answers for one project's stored series (PS3.18 sections 10.4 and 10.6).

Plain functions over the ORM and :mod:`.instances`; the views only authenticate and wrap them. Searches
read the database only (no volume is loaded); retrievals load the series once per process
(:data:`.instances.series_cache`).
"""

import json
import secrets

from studies.pacs.models import StoredSeries

from .instances import EXPLICIT_VR_LITTLE_ENDIAN, series_cache, study_uid_of

__all__ = ["EXPLICIT_VR_LITTLE_ENDIAN"]


class NotFound(Exception):
    """No such study, series, instance or frame in the project (answered 404)."""


def dumps(data):
    return json.dumps(data, separators=(",", ":"))


def _attr(vr, *values):
    return {"vr": vr, "Value": list(values)} if values and values[0] not in (None, "") else {"vr": vr}


def _stored_series(project):
    return (StoredSeries.objects.filter(project=project).select_related("exam__patient")
            .order_by("created_at", "pk"))


def _patient_id(stored):
    return stored.exam.patient.pseudonym if stored.exam_id else ""


def _study_date(stored):
    if stored.exam_id:
        return stored.exam.exam_date.strftime("%Y%m%d")
    return str((stored.meta or {}).get("study_date") or "").replace("-", "")


def _paginate(rows, query):
    """QIDO ``offset`` and ``limit`` (PS3.18 8.3.4.4); bad numbers are ignored rather than guessed."""
    try:
        offset = max(int(query.get("offset") or 0), 0)
    except ValueError:
        offset = 0
    try:
        limit = int(query.get("limit")) if query.get("limit") else None
    except ValueError:
        limit = None
    rows = rows[offset:]
    return rows[:limit] if limit is not None and limit >= 0 else rows


def _matches(value, wanted):
    """QIDO matching of one attribute: exact, a list of UIDs (backslash or comma separated), or * wildcards."""
    if wanted in (None, ""):
        return True
    import fnmatch

    options = [w for part in wanted.split("\\") for w in part.split(",")]
    return any(fnmatch.fnmatchcase(value or "", option) if "*" in option or "?" in option else value == option
               for option in options)


def _filter(series, query):
    keys = {"StudyInstanceUID": study_uid_of, "0020000D": study_uid_of,
            "SeriesInstanceUID": lambda s: s.series_uid, "0020000E": lambda s: s.series_uid,
            "PatientID": _patient_id, "00100020": _patient_id, "Modality": lambda s: s.modality,
            "00080060": lambda s: s.modality, "StudyDate": _study_date, "00080020": _study_date}
    return [s for s in series if all(_matches(get(s), query.get(key)) for key, get in keys.items())]


def search_studies(project, query):
    by_study = {}
    for stored in _filter(list(_stored_series(project)), query):
        by_study.setdefault(study_uid_of(stored), []).append(stored)
    results = []
    for study_uid, members in by_study.items():
        first = members[0]
        results.append({
            "00080020": _attr("DA", _study_date(first)),
            "00080050": _attr("SH"),
            "00080061": _attr("CS", *sorted({s.modality for s in members})),
            "00100010": _attr("PN", {"Alphabetic": _patient_id(first)} if _patient_id(first) else None),
            "00100020": _attr("LO", _patient_id(first)),
            "0020000D": _attr("UI", study_uid),
            "00200010": _attr("SH", "1"),
            "00201206": _attr("IS", len(members)),
            "00201208": _attr("IS", sum(s.n_slices for s in members)),
        })
    return _paginate(results, query)


def search_series(project, query, study_uid=None):
    series = _filter(list(_stored_series(project)), query)
    if study_uid is not None:
        series = [s for s in series if study_uid_of(s) == study_uid]
        if not series:
            raise NotFound(f"no study {study_uid} in this project")
    results = [{
        "00080060": _attr("CS", s.modality),
        "0008103E": _attr("LO", "bmdsite stored series"),
        "00100020": _attr("LO", _patient_id(s)),
        "0020000D": _attr("UI", study_uid_of(s)),
        "0020000E": _attr("UI", s.series_uid),
        "00200011": _attr("IS", 1),
        "00201209": _attr("IS", s.n_slices),
    } for s in series]
    return _paginate(results, query)


def stored_series(project, study_uid, series_uid):
    stored = _stored_series(project).filter(series_uid=series_uid).first()
    if stored is None or study_uid_of(stored) != study_uid:
        raise NotFound(f"no series {series_uid} in study {study_uid} of this project")
    return stored


def series_instances(project, study_uid, series_uid):
    """(StoredSeries, SeriesInstances) or NotFound."""
    stored = stored_series(project, study_uid, series_uid)
    return stored, series_cache.get(stored)


def slice_index(instances, sop_uid):
    k = instances.index_of(sop_uid)
    if k is None:
        raise NotFound(f"no instance {sop_uid} in series {instances.series_uid}")
    return k


def search_instances(project, study_uid, series_uid, query):
    stored = stored_series(project, study_uid, series_uid)
    # UIDs and numbers only: no need to load the volume for a listing.
    from .instances import CT_IMAGE_STORAGE, sop_uid_of

    results = [{
        "00080016": _attr("UI", CT_IMAGE_STORAGE),
        "00080018": _attr("UI", sop_uid_of(stored.series_uid, k)),
        "0020000D": _attr("UI", study_uid),
        "0020000E": _attr("UI", series_uid),
        "00200013": _attr("IS", k + 1),
        "00280008": _attr("IS", 1),
    } for k in range(stored.n_slices)]
    wanted = query.get("SOPInstanceUID") or query.get("00080018")
    if wanted:
        results = [r for r in results if _matches(r["00080018"]["Value"][0], wanted)]
    return _paginate(results, query)


def series_metadata(project, study_uid, series_uid, *, base_url, sop_uid=None):
    """DICOM JSON of every instance of the series (or of one), with BulkDataURIs to their pixels."""
    _, instances = series_instances(project, study_uid, series_uid)
    indices = [slice_index(instances, sop_uid)] if sop_uid else range(len(instances))
    return [instances.metadata(k, bulk_data_uri=f"{base_url}/instances/{instances.sop_uids[k]}/frames/1")
            for k in indices]


def frame_numbers(text):
    """Frame numbers of a ``frames/{list}`` path; every instance here has exactly one frame."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise NotFound(f"bad frame list {text!r}") from None
    if not numbers or any(n != 1 for n in numbers):
        raise NotFound("these instances have one frame (number 1)")
    return numbers


def new_boundary():
    return "bmdsite-" + secrets.token_hex(12)


def multipart_type(part_type, boundary, transfer_syntax=None):
    extra = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"{extra}; boundary={boundary}'


def multipart_instances(instances, indices, boundary):
    """Yield the multipart/related body of Part 10 instances, one part at a time (a series can be large)."""
    head = (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
            "\r\n\r\n").encode("ascii")
    for k in indices:
        yield head + instances.instance_bytes(k) + b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def multipart_frames(instances, k, numbers, boundary):
    head = (f"--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax="
            f"{EXPLICIT_VR_LITTLE_ENDIAN}\r\n\r\n").encode("ascii")
    pixels = instances.frame_bytes(k)
    return b"".join(head + pixels + b"\r\n" for _ in numbers) + f"--{boundary}--\r\n".encode("ascii")


def voxel_bytes(instances):
    """The stored values of every slice as one read-only byte view (little-endian int16, slice order)."""
    import numpy as np

    values = np.ascontiguousarray(instances.stored_values, dtype="<i2")
    return memoryview(values).cast("B")


def wants_bulk_data(accept):
    """Whether an Accept header asks for bulk data (octet-stream parts) rather than DICOM instances."""
    return "application/octet-stream" in accept and "application/dicom" not in accept


def multipart_series_frames(instances, boundary, frames_url):
    """Yield every frame of the series as one multipart/related body (PS3.18 bulk data of a series), in
    slice order, each part with the Content-Location of its frame."""
    for k, sop in enumerate(instances.sop_uids):
        head = (f"--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax="
                f"{EXPLICIT_VR_LITTLE_ENDIAN}\r\nContent-Location: {frames_url.format(sop=sop)}\r\n\r\n")
        yield head.encode("ascii") + instances.frame_bytes(k) + b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")

"""Images in: retrieve (DICOMweb) or import (folder, zip) -> de-identify -> assemble -> store.

The one straight line every page, job and command uses:

- :func:`pull_series` / :func:`pull_study` for a PACS, :func:`import_local` for a folder or a zip;
- all of them end in :func:`ingest_files`: de-identify the instances (:mod:`studies.pacs.deid`), assemble
  them with :func:`analysis.imaging.dicom.assemble_series` (the product's one DICOM loader, which rejects
  every series that would not give a trustworthy volume), then :func:`store_volume`.

A series is stored only when complete. The instances live in a private temporary folder (removed
afterwards, whatever happens); the volume file is written under a temporary name next to its final name and
renamed (atomic on one file system); the :class:`StoredSeries` row is created in a transaction after the
file is in place. Re-running with the same SeriesInstanceUID finds the row and stores nothing twice; a file
left without a row by a crash between rename and commit is complete and is simply replaced on the re-run.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import IntegrityError, transaction

from analysis.imaging.dicom import DicomSeriesError, assemble_series
from analysis.imaging.volume import Volume

from . import deid
from .client import PacsClient, PacsError
from .models import PseudonymMap, StoredSeries
from .selection import Selection, SeriesCandidate, candidate_from_headers, json_header, select_series

log = logging.getLogger(__name__)


class IngestError(Exception):
    """A series that was not stored, with the reason. ``series`` names it; ``code`` is machine-readable."""

    def __init__(self, series: str, code: str, problem: str):
        self.series = series
        self.code = code
        self.problem = problem
        super().__init__(f"series {series}: {problem}")


@dataclass
class IngestResult:
    stored: StoredSeries
    created: bool
    selection: Selection | None = None


# -- the volume file ----------------------------------------------------------------------------------------
def _volume_name(project_id: int, series_uid: str) -> str:
    return f"volumes/p{project_id}/{series_uid}.npz"


def _write_npz(path: Path, volume: Volume):
    """``array`` (z, y, x) and ``affine`` (LPS) in a zip that ``numpy.load`` reads. Deflate level 1: CT
    compresses about as well as at level 6, several times faster."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in (("array", np.ascontiguousarray(volume.array)), ("affine", np.asarray(volume.affine))):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)


def write_volume_file(volume: Volume, name: str) -> str:
    """Write the volume to storage under ``name`` atomically (temporary name, then rename); returns the name."""
    storage = default_storage
    if isinstance(storage, FileSystemStorage):
        final = Path(storage.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".npz", dir=final.parent)
        os.close(fd)
        try:
            _write_npz(Path(tmp), volume)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name
    # Object stores publish an object only once its upload is complete: write locally, then upload.
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir) / "volume.npz"
        _write_npz(tmp, volume)
        if storage.exists(name):
            storage.delete(name)
        with open(tmp, "rb") as fh:
            return storage.save(name, fh)


def load_stored_volume(stored: StoredSeries) -> Volume:
    """The volume of a :class:`StoredSeries` (LPS affine, HU (z, y, x), its meta and flags)."""
    with default_storage.open(stored.volume.name, "rb") as fh:
        data = fh.read() if not hasattr(fh, "seekable") or not fh.seekable() else None
        with np.load(io.BytesIO(data) if data is not None else fh, allow_pickle=False) as npz:
            array, affine = npz["array"], npz["affine"]
    meta = dict(stored.meta, flags=list(stored.flags), series_uid=stored.series_uid)
    return Volume(array=array, affine=affine, series_uid=stored.series_uid, convention="LPS", meta=meta)


# -- storing ------------------------------------------------------------------------------------------------
def _meta_for(volume: Volume, header_facts: dict, deid_summary: dict) -> dict:
    keep = ("study_uid", "frame_of_reference_uid", "n_slices", "slice_step_mm", "slice_thickness", "kvp",
            "manufacturer", "model", "contrast", "image_type", "transfer_syntaxes", "sop_instance_uids",
            "replaced_empty_uids", "notes", "excluded")
    meta = {k: volume.meta.get(k) for k in keep if k in volume.meta}
    meta.update(header_facts)
    meta["deidentification"] = deid_summary
    return meta


def store_volume(project, volume: Volume, *, exam=None, source="", selection_reason="", meta=None,
                 pseudonym_link=None) -> tuple[StoredSeries, bool]:
    """File first, then the row in a transaction. Returns (row, created); an existing row is returned as is.

    ``pseudonym_link`` is ``(real_id, pseudonym, user)`` to record in the pseudonym map in the same
    transaction as the row.
    """
    series_uid = volume.series_uid
    existing = StoredSeries.objects.filter(project=project, series_uid=series_uid).first()
    if existing is not None:
        return _link_exam(existing, exam), False
    name = write_volume_file(volume, _volume_name(project.pk, series_uid))
    spacing = [round(v, 6) for v in volume.spacing]
    geometry = {"affine_lps": np.asarray(volume.affine).round(6).tolist(),
                "origin_lps": [round(float(v), 6) for v in volume.origin],
                "direction": np.asarray(volume.direction).round(6).tolist()}
    try:
        with transaction.atomic():
            if pseudonym_link is not None:
                real_id, pseudonym, user = pseudonym_link
                _record_pseudonym(project, real_id, pseudonym, user)
            stored = StoredSeries.objects.create(
                project=project, exam=exam, series_uid=series_uid, study_uid=volume.meta.get("study_uid", ""),
                modality="CT", n_slices=volume.shape[0], spacing=spacing, shape=list(volume.shape),
                dtype=str(volume.array.dtype), geometry=geometry, meta=meta or {},
                flags=list(volume.meta.get("flags", [])), volume=name, source=source[:300],
                selection_reason=selection_reason)
    except IntegrityError:
        # A concurrent run stored the same series (same content, same file name): take its row.
        existing = StoredSeries.objects.filter(project=project, series_uid=series_uid).first()
        if existing is None:
            raise
        return _link_exam(existing, exam), False
    if exam is not None:
        _fill_exam(exam, stored)
    return stored, True


def _record_pseudonym(project, real_id, pseudonym, user):
    if not real_id:
        return
    row, created = PseudonymMap.objects.get_or_create(project=project, real_patient_id=real_id,
                                                      defaults={"pseudonym": pseudonym, "created_by": user})
    if not created and row.pseudonym != pseudonym:
        raise ValueError(f"pseudonym map changed during ingest (now {row.pseudonym}); run the import again")


def _link_exam(stored, exam):
    if exam is not None and stored.exam_id is None:
        stored.exam = exam
        stored.save(update_fields=["exam"])
        _fill_exam(exam, stored)
    return stored


def _fill_exam(exam, stored):
    """Fill the exam's empty acquisition fields from the stored series (never overwrite what was entered)."""
    changed = []
    meta = stored.meta
    for field_name, value in (("study_uid", stored.study_uid), ("series_uid", stored.series_uid),
                              ("scanner_model", meta.get("model") or ""), ("kvp", meta.get("kvp")),
                              ("slice_thickness_mm", meta.get("slice_thickness"))):
        if value not in (None, "") and getattr(exam, field_name) in (None, ""):
            setattr(exam, field_name, value)
            changed.append(field_name)
    if meta.get("contrast") and not exam.contrast:
        exam.contrast = True
        changed.append("contrast")
    if changed:
        exam.save(update_fields=changed)


# -- the common path: files of one series -> stored series -----------------------------------------------------
def _header_facts(ds) -> dict:
    """Research facts from a de-identified header (no PHI by construction)."""
    facts = {}
    for key, keyword in (("study_date", "StudyDate"), ("series_date", "SeriesDate"), ("patient_sex", "PatientSex"),
                         ("patient_age", "PatientAge"), ("body_part", "BodyPartExamined"),
                         ("kernel", "ConvolutionKernel"), ("series_number", "SeriesNumber"),
                         ("patient_pseudonym", "PatientID")):
        value = ds.get(keyword)
        if value not in (None, ""):
            facts[key] = str(value) if not isinstance(value, (int, float)) else value
    return facts


def ingest_files(project, paths, *, source: str, exam=None, user=None, series_uid: str | None = None,
                 selection_reason: str = "", name: str | None = None) -> IngestResult:
    """De-identify, assemble and store the files of one series (the files are modified in place: pass copies).

    Raises
    ------
    IngestError
        When the files do not make a trustworthy CT volume (the assembler's reason) or their patient does not
        fit the exam; nothing is stored then.
    """
    import pydicom

    paths = [Path(p) for p in paths]
    label = series_uid or name or source
    preferred = exam.patient.pseudonym if exam is not None else ""
    real_ids = set()
    pseudonym = None
    first_header = None
    summary = {"profile": deid.PROFILE, "codes": [c for c, _ in deid.METHOD_CODES], "removed": set(),
               "private_removed": 0, "names_removed": 0}
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue  # not DICOM (README, DICOMDIR...): the assembler notes and skips it
        if series_uid is not None and str(ds.get("SeriesInstanceUID", "") or "") != series_uid:
            continue
        real = deid.real_patient_id(ds)
        real_ids.add(real)
        if len(real_ids) > 1:
            raise IngestError(label, "several_patients", "instances of more than one patient (PatientID differs)")
        if pseudonym is None:
            pseudonym = _pseudonym_lookup(project, real, preferred, label)
        record = deid.deidentify(ds, pseudonym=pseudonym)
        summary["removed"].update(record.removed + record.emptied)
        summary["private_removed"] += record.private_removed
        summary["names_removed"] += record.other_names_removed
        ds.save_as(path)
        if first_header is None:
            first_header = ds
            first_header.PixelData = b""  # only the header is kept around
    summary["removed"] = sorted(summary["removed"])
    try:
        volume = assemble_series(paths, series_uid=series_uid, name=name or source)
    except DicomSeriesError as exc:
        raise IngestError(exc.series, exc.code, exc.problem) from exc
    facts = _header_facts(first_header) if first_header is not None else {}
    if "replaced_empty_uids" in volume.meta.get("flags", []):
        summary["replaced_empty_uids"] = True
    meta = _meta_for(volume, facts, summary)
    real = next(iter(real_ids), "")
    stored, created = store_volume(project, volume, exam=exam, source=source, selection_reason=selection_reason,
                                   meta=meta, pseudonym_link=(real, pseudonym or "", user))
    return IngestResult(stored=stored, created=created)


def _pseudonym_lookup(project, real_id, preferred, label):
    """The pseudonym the map has (or will have) for ``real_id``; the map row is written with the series row."""
    if not real_id:
        return preferred or ""
    existing = PseudonymMap.objects.filter(project=project, real_patient_id=real_id).values_list(
        "pseudonym", flat=True).first()
    if existing and preferred and existing != preferred:
        raise IngestError(label, "patient_mismatch",
                          f"the patient of this series is {existing} in the project, but the exam belongs to "
                          f"{preferred}")
    if existing:
        return existing
    if preferred and PseudonymMap.objects.filter(project=project, pseudonym=preferred).exists():
        raise IngestError(label, "patient_mismatch",
                          f"the exam's patient {preferred} is mapped to another PACS patient")
    return preferred or deid.new_pseudonym()


def _work_dir() -> Path:
    root = Path(settings.STORAGE_ROOT) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="ingest-", dir=root))


# -- PACS ------------------------------------------------------------------------------------------------------
def series_candidates(client: PacsClient, study_uid: str) -> list[SeriesCandidate]:
    """One candidate per series of the study, from QIDO-RS and the WADO-RS metadata of its instances."""
    out = []
    for hit in client.search_series(study_uid):
        metadata = client.series_metadata(study_uid, hit.series_uid) if hit.modality in ("CT", "") else []
        if metadata:
            candidate = candidate_from_headers([json_header(m) for m in metadata], series_uid=hit.series_uid,
                                               number=hit.number, description=hit.description)
        else:
            candidate = SeriesCandidate(series_uid=hit.series_uid, study_uid=study_uid, modality=hit.modality,
                                        description=hit.description, number=hit.number,
                                        n_images=hit.n_instances or 0)
        candidate.study_uid = study_uid
        out.append(candidate)
    return out


def select_in_study(client: PacsClient, study_uid: str, override_uid: str | None = None) -> Selection:
    candidates = series_candidates(client, study_uid)
    if not candidates:
        raise IngestError(f"<study {study_uid}>", "no_series", f"the PACS has no series in study {study_uid}")
    return select_series(candidates, override_uid=override_uid)


def pull_series(project, client: PacsClient, study_uid: str, series_uid: str, *, exam=None, user=None,
                selection_reason: str = "", progress=None) -> IngestResult:
    """Retrieve one series over WADO-RS and store it; an already stored series is returned, not fetched again.

    ``progress(fraction, message)`` is called while instances arrive (the retrieval is ~90% of the work).

    Raises
    ------
    PacsError
        The PACS failed (after retries) or broke a safety rule; nothing stored.
    IngestError
        The series is not a trustworthy CT volume; nothing stored.
    """
    existing = StoredSeries.objects.filter(project=project, series_uid=series_uid).first()
    if existing is not None:
        return IngestResult(stored=_link_exam(existing, exam), created=False)
    expected = None
    if progress is not None:
        hits = [h for h in client.search_series(study_uid) if h.series_uid == series_uid]
        expected = hits[0].n_instances if hits else None

    def on_instance(n, n_bytes):
        if progress is not None:
            fraction = 0.9 * n / expected if expected else 0.0
            progress(min(fraction, 0.9), f"received {n}{f' of {expected}' if expected else ''} instances "
                                         f"({n_bytes / 1e6:.1f} MB)")

    work = _work_dir()
    try:
        paths = client.retrieve_series(study_uid, series_uid, work / "instances", progress=on_instance)
        if progress is not None:
            progress(0.9, f"assembling {len(paths)} instances")
        return ingest_files(project, paths, source=client.endpoint.label, exam=exam, user=user,
                            series_uid=series_uid, selection_reason=selection_reason)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pull_study(project, client: PacsClient, study_uid: str, *, series_uid: str | None = None, exam=None,
               user=None, progress=None, override_by: str = "") -> IngestResult:
    """Select the series to measure in a study (or take ``series_uid``) and pull it."""
    if series_uid and StoredSeries.objects.filter(project=project, series_uid=series_uid).exists():
        return pull_series(project, client, study_uid, series_uid, exam=exam, user=user)
    selection = select_in_study(client, study_uid, override_uid=series_uid or None)
    if selection.chosen is None:
        listing = "; ".join(f"{c.label}: {selection.reasons[c.series_uid]}" for c in selection.candidates)
        raise IngestError(f"<study {study_uid}>", "no_eligible_series", f"no series to measure: {listing}")
    reason = selection.chosen_reason
    if selection.override and override_by:
        reason = f"{reason} (override by {override_by})"
    result = pull_series(project, client, study_uid, selection.chosen.series_uid, exam=exam, user=user,
                         selection_reason=reason, progress=progress)
    result.selection = selection
    return result


# -- local import ---------------------------------------------------------------------------------------------
# Members that expand to less than this are not held to the ratio: a small file of zeros compresses a
# thousand times and is harmless; the total size limit bounds many of them.
ZIP_RATIO_FLOOR_BYTES = 1 << 20


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1024 ** 3:.1f} GiB" if n_bytes >= 1024 ** 3 else f"{n_bytes / 1024 ** 2:.1f} MiB"


def _extract_zip(zip_path: Path, into: Path):
    """Extract a zip safely: no absolute paths or ``..``, no links, bounded member count, total size and
    compression ratio (``IMPORT_ZIP_*`` settings).

    The sizes the zip declares are checked before anything is written; the bytes actually written are
    counted while extracting, against the same limits, so a zip whose directory understates its members is
    stopped as well. Errors name the member; the caller removes what was extracted.
    """
    max_members = settings.IMPORT_ZIP_MAX_MEMBERS
    max_total = settings.IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES
    max_ratio = settings.IMPORT_ZIP_MAX_RATIO
    label = f"<{zip_path.name}>"
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise IngestError(label, "bad_zip", f"{zip_path.name} is not a readable zip file") from exc

    def too_large(total):
        declared = f": {_size(total)} declared" if total else ""
        return IngestError(label, "zip_too_large", f"{zip_path.name} expands to more than {_size(max_total)} "
                                                   f"(IMPORT_ZIP_MAX_UNCOMPRESSED_BYTES){declared}")

    def too_compressed(member, size):
        ratio = size / max(member.compress_size, 1)
        so_far = " so far" if size < member.file_size else ""
        return IngestError(label, "zip_bomb",
                           f"member {member.filename} of {zip_path.name} expands {ratio:,.0f} times "
                           f"({_size(member.compress_size)} to {_size(size)}{so_far}); at most {max_ratio} times "
                           "is accepted (IMPORT_ZIP_MAX_RATIO)")

    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_members:
            raise IngestError(label, "zip_too_large", f"{zip_path.name} holds {len(members)} files, more than "
                                                      f"{max_members} (IMPORT_ZIP_MAX_MEMBERS)")
        declared = sum(m.file_size for m in members)
        if declared > max_total:
            raise too_large(declared)
        for member in members:
            name = Path(member.filename)
            if name.is_absolute() or ".." in name.parts or (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise IngestError(label, "unsafe_zip", f"unsafe member name {member.filename!r}")
            if member.file_size > ZIP_RATIO_FLOOR_BYTES and member.file_size > max_ratio * max(member.compress_size, 1):
                raise too_compressed(member, member.file_size)
        written = 0
        for k, member in enumerate(members):
            name = Path(member.filename)
            if name.name.startswith(".") or name.parts[0] == "__MACOSX":
                continue
            target = into / f"{k:06d}-{name.name}"
            size = 0
            try:
                with zf.open(member) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        size += len(chunk)
                        written += len(chunk)
                        if written > max_total:
                            raise too_large(0)
                        if size > ZIP_RATIO_FLOOR_BYTES and size > max_ratio * max(member.compress_size, 1):
                            raise too_compressed(member, size)
                        dst.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise IngestError(label, "bad_zip", f"member {member.filename} of {zip_path.name} is damaged "
                                                    f"({exc})") from exc


def _copy_folder(folder: Path, into: Path):
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise IngestError(f"<{folder}>", "no_images", f"folder {folder} holds no files")
    for k, path in enumerate(files):
        shutil.copyfile(path, into / f"{k:06d}-{path.name}")


def local_candidates(folder: Path) -> tuple[list[SeriesCandidate], dict]:
    """Group the DICOM files of ``folder`` by SeriesInstanceUID; returns (candidates, uid -> files)."""
    import pydicom

    groups = defaultdict(list)
    headers = defaultdict(list)
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" not in ds:
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        groups[uid].append(path)
        headers[uid].append(ds)
    candidates = [candidate_from_headers(headers[uid], series_uid=uid) for uid in groups]
    return candidates, groups


def import_local(project, source, *, exam=None, user=None, series_uid: str | None = None,
                 override_by: str = "") -> IngestResult:
    """Import the series to measure from a folder or a ``.zip`` of DICOM files (the source is not modified).

    Several series in the source: the selection rules pick one (``series_uid`` overrides; "" names a series
    whose UID is empty). Raises :class:`IngestError` when nothing can be stored.
    """
    source = Path(source)
    work = _work_dir()
    try:
        files = work / "files"
        files.mkdir()
        if source.is_dir():
            _copy_folder(source, files)
        elif source.is_file() and zipfile.is_zipfile(source):
            _extract_zip(source, files)
        elif source.exists():
            raise IngestError(f"<{source.name}>", "bad_source", f"{source.name} is neither a folder nor a zip file")
        else:
            raise IngestError(f"<{source}>", "bad_source", f"{source} does not exist")
        candidates, groups = local_candidates(files)
        if not candidates:
            raise IngestError(f"<{source.name}>", "no_images", f"no DICOM images in {source.name}")
        try:
            selection = select_series(candidates, override_uid=series_uid)
        except ValueError as exc:
            raise IngestError(series_uid or "?", "series_not_found", f"{exc} ({source.name})") from exc
        if selection.chosen is None:
            listing = "; ".join(f"{c.label}: {selection.reasons[c.series_uid]}" for c in candidates)
            raise IngestError(f"<{source.name}>", "no_eligible_series", f"no series to measure: {listing}")
        chosen = selection.chosen.series_uid
        existing = StoredSeries.objects.filter(project=project, series_uid=chosen).first() if chosen else None
        if existing is not None:
            return IngestResult(stored=_link_exam(existing, exam), created=False, selection=selection)
        reason = selection.chosen_reason + (f" (override by {override_by})" if selection.override and override_by
                                            else "")
        result = ingest_files(project, groups[chosen], source=f"local import {source.name}", exam=exam, user=user,
                              selection_reason=reason, name=source.name)
        result.selection = selection
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["IngestError", "IngestResult", "PacsError", "import_local", "ingest_files", "load_stored_volume",
           "pull_series", "pull_study", "select_in_study", "series_candidates", "store_volume",
           "write_volume_file"]

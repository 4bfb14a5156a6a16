"""python manage.py measure_volume INPUT --out OUT.json [--labels-out LABELS.nii.gz] [--device cpu|cuda]
[--labels-in LABELS.nii.gz] [--erosion-mm MM] [--roi mid_body|spec_erosion] [--segments-out SEGMENTS.nii.gz]
[--segmenter NAME|FOLDER]

Segments (or takes the given VerSe body labels), and measures the trabecular HU of every vertebra of one CT,
without touching the database (SPEC section 6). Centroids are in the input's own convention: RAS for
NIfTI, LPS for a DICOM folder. Every body segment found, named or not, is listed in OUT.json ``segments``
(index 1 at the head end); ``--segments-out`` writes those indices on the input grid. The trabecular ROI is
the SPEC erosion (``--roi spec_erosion``, default) or that erosion kept clear of both endplates
(``--roi mid_body``, for thick slices); OUT.json ``roi`` says which.
"""

import json
import os
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _write_atomically(path: Path, write):
    """Write beside the target and rename, so a failure never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".partial" + "".join(path.suffixes))
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Command(BaseCommand):
    help = "Measure the trabecular HU of each vertebra of a CT (NIfTI file or DICOM folder) into a JSON file."

    def add_arguments(self, parser):
        parser.add_argument("input", help="NIfTI file or folder holding one DICOM series")
        parser.add_argument("--out", required=True, help="JSON file to write")
        parser.add_argument("--labels-out", help="write the vertebral body labels (VerSe numbering) as NIfTI")
        parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="segmentation device")
        parser.add_argument("--labels-in", help="measure this VerSe-numbered body label NIfTI instead of segmenting")
        parser.add_argument("--erosion-mm", type=float, default=3.0, help="ROI erosion depth in mm (default 3)")
        parser.add_argument("--roi", choices=("mid_body", "spec_erosion"), default="spec_erosion",
                            help="trabecular ROI: the SPEC erosion (spec_erosion, default) or the erosion kept "
                                 "clear of both endplates (mid_body)")
        parser.add_argument("--segments-out", help="write every body segment's index (1 at the head end) as NIfTI")
        parser.add_argument("--segmenter", help="segmenter version name, 'anatomy' (rule-based) or a MONAI bundle "
                                                "folder (default: the rule-based segmenter)")

    def handle(self, *args, input, out, labels_out=None, device="cpu", labels_in=None, erosion_mm=3.0,
               segments_out=None, segmenter=None, roi="spec_erosion", **options):
        from analysis.imaging.volume import load_volume, save_nifti
        from analysis.measurement import measure_segmentation, measurement_json, segments_json
        from analysis.segmentation.external import from_verse
        from analysis.segmentation.levels import segments_from_verse_labels

        out_path = Path(out)
        for target in filter(None, (out, labels_out, segments_out)):
            if not Path(target).parent.is_dir():
                raise CommandError(f"{target}: folder {Path(target).parent} does not exist")
        for target, option in ((labels_out, "--labels-out"), (segments_out, "--segments-out")):
            if target and not target.endswith((".nii", ".nii.gz")):
                raise CommandError(f"{target}: {option} must end in .nii or .nii.gz")
        if not erosion_mm >= 0:
            raise CommandError(f"--erosion-mm must be >= 0, got {erosion_mm}")

        started = time.perf_counter()
        try:
            volume = load_volume(input)
        except Exception as exc:  # every reader error becomes one line naming the input
            message = _one_line(exc)
            raise CommandError(message if str(input) in message else f"{input}: {message}") from None
        loaded = time.perf_counter()

        segmentation_flags = []
        level_confidence = None
        segmenter_timings = {}
        if labels_in:
            try:
                labels = from_verse(labels_in, like=volume)
            except Exception as exc:
                message = _one_line(exc)
                raise CommandError(message if str(labels_in) in message else f"{labels_in}: {message}") from None
            try:
                segment_labels, segments = segments_from_verse_labels(labels)
            except ValueError as exc:
                raise CommandError(f"{labels_in}: {_one_line(exc)}") from None
            segmenter = {"name": "labels-in", "path": str(labels_in)}
        else:
            from analysis.segmentation.network.registry import resolve_segmenter

            try:
                segment = resolve_segmenter(segmenter)
            except Exception as exc:
                raise CommandError(f"--segmenter {segmenter}: {_one_line(exc)}") from None
            try:
                result = segment(volume, device=device)
            except Exception as exc:
                raise CommandError(f"{input}: segmentation failed: {_one_line(exc)}") from None
            labels = result.labels
            segment_labels, segments = result.segment_labels, result.segments
            level_confidence = dict(result.level_confidence)
            segmentation_flags = list(result.flags)
            segmenter_timings = dict(result.timings_s)
            # The device the segmenter actually ran on, not the one asked for.
            segmenter = {"name": segment.name if segmenter else "default", "version": result.segmenter_version,
                         "device": result.device, "notes": list(result.notes)}
        segmented = time.perf_counter()

        try:
            measured_all = measure_segmentation(
                volume, labels, segment_labels, segments, level_confidence=level_confidence,
                segmentation_flags=segmentation_flags, notes=segmenter.get("notes", ()), erosion_mm=erosion_mm,
                contrast=bool(volume.meta.get("contrast", False)), roi=roi)
        except ValueError as exc:
            raise CommandError(f"{labels_in or input}: {_one_line(exc)}") from None
        measurements = measured_all.levels
        if "notes" in segmenter:
            segmenter["notes"] = measured_all.notes
        measured = time.perf_counter()

        timings = {"load": loaded - started, "segmentation": segmented - loaded, "measure": measured - segmented}
        timings.update({f"segmentation_{k}": v for k, v in segmenter_timings.items()})
        if labels_out:
            _write_atomically(Path(labels_out), lambda p: save_nifti(labels, p, like=volume, dtype="uint8"))
        if segments_out:
            _write_atomically(Path(segments_out), lambda p: save_nifti(segment_labels, p, like=volume, dtype="uint8"))
        timings["total"] = time.perf_counter() - started
        document = measurement_json(
            measurements,
            timings,
            segmentation_flags=measured_all.segmentation_flags,
            input=str(input),
            coordinate_convention=volume.convention,
            erosion_mm=float(erosion_mm),
            roi=roi,
            segmenter=segmenter,
            level_confidence=measured_all.level_confidence,
            segments=segments_json(measured_all.segments),
        )
        _write_atomically(out_path, lambda p: p.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8"))
        self.stdout.write(f"{len(measurements)} levels measured -> {out_path}")

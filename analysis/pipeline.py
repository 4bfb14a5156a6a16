"""The image pipeline for registry exams: stored series -> segmentation -> trabecular ROI -> per-level HU
-> an immutable MeasurementRun. The ORM glue over ``analysis.segmentation`` and ``analysis.measurement``."""

import time

from django.core.files.base import ContentFile
from django.db import transaction

from .models import LevelMeasurement, MeasurementRun


class PipelineError(Exception):
    """The exam cannot be measured (no stored series, unreadable volume); the message says why."""


def series_for_exam(exam):
    """The stored series to measure: the one linked to the exam, newest first."""
    stored = exam.stored_series.order_by("-created_at").first()
    if stored is None:
        raise PipelineError(f"exam {exam} has no stored CT series; pull or import one first")
    return stored


def _labels_nifti_bytes(volume, labels):
    import tempfile
    from pathlib import Path

    from analysis.imaging.volume import save_nifti

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.nii.gz"
        save_nifti(volume.with_array(labels), path, dtype="uint8")
        return path.read_bytes()


def measure_exam(exam, *, erosion_mm=3.0, device="cpu", user=None, progress=None, segmenter=None):
    """Segment, label and measure the exam's stored series; returns the new MeasurementRun."""
    from analysis.measurement import ROI_SPEC_EROSION, case_flags, measure_segmentation, segments_json
    from analysis.modeling.versions import code_version
    from analysis.segmentation.network.registry import resolve_segmenter

    stored = series_for_exam(exam)
    report = progress or (lambda fraction, message="": None)
    started = time.perf_counter()
    report(0.05, f"loading series {stored.series_uid}")
    volume = stored.load_volume()
    loaded = time.perf_counter()
    report(0.2, "segmenting vertebrae")
    # ``segmenter``: a name for the registry; None is the project's promoted version, else the rule-based one.
    segmentation = resolve_segmenter(segmenter, project=exam.patient.project)(volume, device=device)
    segmented = time.perf_counter()
    report(0.8, "measuring trabecular HU")
    contrast = bool(stored.meta.get("contrast") or exam.contrast)
    result = measure_segmentation(volume, segmentation.labels, segmentation.segment_labels, segmentation.segments,
                                  level_confidence=segmentation.level_confidence,
                                  segmentation_flags=segmentation.flags, notes=segmentation.notes,
                                  erosion_mm=erosion_mm, contrast=contrast)
    measurements = result.levels
    measured = time.perf_counter()
    timings = {"load": loaded - started, **{f"segmentation_{k}": v for k, v in segmentation.timings_s.items()},
               "segmentation": segmented - loaded, "measure": measured - segmented}
    labels_bytes = _labels_nifti_bytes(volume, segmentation.labels)
    segment_bytes = _labels_nifti_bytes(volume, segmentation.segment_labels)
    timings["total"] = time.perf_counter() - started
    with transaction.atomic():
        run = MeasurementRun(
            exam=exam, source=MeasurementRun.PIPELINE, segmenter_version=segmentation.segmenter_version,
            # The device the segmenter actually ran on (the rule-based one always on CPU), not the one asked for.
            parameters={"erosion_mm": erosion_mm, "roi": ROI_SPEC_EROSION, "device": segmentation.device,
                        "level_confidence": result.level_confidence, "notes": result.notes},
            timings={k: round(v, 4) for k, v in timings.items()},
            flags=case_flags(measurements, result.segmentation_flags), code_version=code_version(),
            series_uid=stored.series_uid, segments=segments_json(result.segments), created_by=user,
        )
        # The file is written before the row, inside the transaction: a failure leaves neither behind
        # (a stray file from a rolled-back row is harmless and unreferenced).
        run.labels.save(f"exam{exam.pk}-{stored.series_uid}.nii.gz", ContentFile(labels_bytes), save=False)
        run.segment_labels.save(f"exam{exam.pk}-{stored.series_uid}-segments.nii.gz", ContentFile(segment_bytes),
                                save=False)
        run.save()
        LevelMeasurement.objects.bulk_create([LevelMeasurement.from_measured(run, m) for m in measurements.values()])
    report(1.0, f"{len(measurements)} levels measured")
    return run



"""Review fixtures: an exam with a stored synthetic spine CT and a measurement run of its true body labels.

The run is made as ``measure_volume --labels-in`` makes one: the real ``measure_levels`` on a given label map
(the phantom's exact bodies), so the review works on real measurements without running the 50 s segmenter.
"""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile

from analysis.imaging.dicom import content_uid
from analysis.imaging.phantom import make_spine_phantom
from analysis.imaging.volume import save_nifti
from analysis.measurement import case_flags, measure_levels, measure_segments, segments_json
from analysis.models import LevelMeasurement, MeasurementRun
from analysis.segmentation.levels import VERSE_LABEL, BodySegment
from studies.pacs.ingest import store_volume
from tests.factories import ExamFactory

LEVELS = ("T10", "T11", "T12", "L1", "L2")


def make_measured_exam(exam=None, *, levels=LEVELS, confidence=0.95, low=(), withheld=(), random_state=0,
                       spacing=(3.0, 2.0, 2.0)):
    """An exam with a stored phantom series and a pipeline-like run naming ``levels`` (``low``: levels whose
    name has confidence 0.3; ``withheld``: levels found as segments but not named). Returns (exam, run,
    phantom)."""
    exam = exam or ExamFactory(region="both")
    phantom = make_spine_phantom(spacing=spacing, levels=levels, orientation="LPS", noise_sd=10.0,
                                 random_state=random_state)
    volume = dataclasses.replace(phantom.volume, series_uid=content_uid("review-test", exam.pk, random_state))
    store_volume(exam.patient.project, volume, exam=exam, source="test phantom")
    level_confidence = {name: (0.3 if name in low else confidence) for name in levels if name not in withheld}
    named = phantom.body_labels * ~np.isin(phantom.body_labels, [VERSE_LABEL[n] for n in withheld])
    measurements = measure_levels(volume, named, level_confidence=level_confidence)
    # The segments contract: every body, named or not, on a segment-index map (1 at the head end).
    index_map = np.zeros(phantom.body_labels.shape, dtype=np.uint8)
    bodies = []
    for index, name in enumerate(levels, start=1):
        index_map[phantom.body_labels == VERSE_LABEL[name]] = index
        bodies.append(BodySegment(index=index, level=None if name in withheld else name,
                                  confidence=None if name in withheld else level_confidence[name],
                                  flags=["level_withheld"] if name in withheld else []))
    segments = segments_json(measure_segments(volume, index_map, bodies))

    def nifti(array):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "labels.nii.gz"
            save_nifti(volume.with_array(array.astype(np.uint8)), path, dtype="uint8")
            return path.read_bytes()

    run = MeasurementRun(exam=exam, source=MeasurementRun.PIPELINE, segmenter_version="phantom-truth",
                         parameters={"erosion_mm": 3.0, "level_confidence": level_confidence,
                                     "notes": ["levels from the phantom's truth"]},
                         flags=case_flags(measurements, ["low_confidence"] if low else []),
                         series_uid=volume.series_uid, segments=segments)
    run.labels.save(f"exam{exam.pk}-test.nii.gz", ContentFile(nifti(named)), save=False)
    run.segment_labels.save(f"exam{exam.pk}-segments.nii.gz", ContentFile(nifti(index_map)), save=False)
    run.save()
    LevelMeasurement.objects.bulk_create([
        LevelMeasurement(run=run, level=m.level, mean_hu=m.mean_hu, median_hu=m.median_hu, sd_hu=m.sd_hu,
                         roi_voxels=m.roi_voxels, body_volume_ml=m.body_volume_ml,
                         centroid_mm=list(m.centroid_mm) if m.centroid_mm is not None else None,
                         flags=list(m.flags)) for m in measurements.values()])
    return exam, run, phantom


@pytest.fixture
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path

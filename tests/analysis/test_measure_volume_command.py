"""manage.py measure_volume (SPEC section 6) with --labels-in: JSON content, errors, coordinate conventions."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.management import CommandError, call_command

from analysis.imaging.volume import load_nifti, load_volume, save_nifti
from analysis.segmentation.external import from_totalsegmentator, from_verse, restrict_to_body

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TOTALSEG = DATA / "totalseg"
SPINE = TOTALSEG / "spine_report"
EXAMPLE_CT = TOTALSEG / "example_ct.nii.gz"


def measure(*args):
    call_command("measure_volume", *[str(a) for a in args])


@pytest.fixture(scope="module")
def reference_labels(tmp_path_factory):
    """pp_refined x body label 1 (the reference bodies of shared/data/README.md) as a VerSe NIfTI."""
    ct = load_nifti(EXAMPLE_CT)
    bodies = restrict_to_body(
        from_verse(SPINE / "totalseg_vertebrae_pp_refined.nii.gz", like=ct),
        load_nifti(SPINE / "totalseg_vertebrae_body.nii.gz").array,
    )
    return save_nifti(bodies, tmp_path_factory.mktemp("labels") / "bodies.nii.gz", like=ct)


def six_neighbour_erosion(mask):
    """The SPEC 3 mm element on 3 mm voxels is the centre and its 6 face neighbours (hand computation)."""
    padded = np.pad(mask, 1)
    out = padded.copy()
    for axis in range(3):
        out &= np.roll(padded, 1, axis) & np.roll(padded, -1, axis)
    return out[1:-1, 1:-1, 1:-1]


def test_labels_in_json_on_example_ct(reference_labels, tmp_path):
    out = tmp_path / "out.json"
    labels_out = tmp_path / "labels_out.nii.gz"
    # The hand computation below is of the SPEC section 2 erosion, the default ROI (the mid-body option is
    # tested in test_mid_body_roi.py and below).
    measure(EXAMPLE_CT, "--out", out, "--labels-in", reference_labels, "--labels-out", labels_out)
    doc = json.loads(out.read_text())
    assert doc["roi"] == "spec_erosion"
    assert {"levels", "timings_s"} <= set(doc)
    assert {"load", "segmentation", "measure", "total"} <= set(doc["timings_s"])
    assert list(doc["levels"]) == ["T12", "L1", "L2", "L3", "L4", "L5"]

    # Independent expectations, straight from the files with nibabel (RAS, data indexed [i, j, k]).
    ct = np.asarray(nib.load(str(EXAMPLE_CT)).dataobj)
    labels_img = nib.load(str(reference_labels))
    labels = np.asarray(labels_img.dataobj)
    report = json.loads((SPINE / "spine_report.json").read_text())["results"]
    readme_mean = {"L1": 117.03, "L2": 118.17, "L3": 113.77, "L4": 117.68, "L5": 126.82}
    for level, value in (("T12", 19), ("L1", 20), ("L2", 21), ("L3", 22), ("L4", 23), ("L5", 24)):
        entry = doc["levels"][level]
        assert {"mean_hu", "median_hu", "roi_voxels", "body_volume_ml", "centroid_mm", "flags"} <= set(entry)
        mask = labels == value
        roi = six_neighbour_erosion(mask)
        assert entry["roi_voxels"] == int(roi.sum())
        assert entry["mean_hu"] == pytest.approx(ct[roi].mean(), abs=1e-4)
        assert entry["median_hu"] == float(np.median(ct[roi]))
        assert entry["body_volume_ml"] == pytest.approx(mask.sum() * 27 / 1000, abs=1e-4)
        centroid_ras = labels_img.affine @ np.append(np.argwhere(mask).mean(axis=0), 1.0)
        np.testing.assert_allclose(entry["centroid_mm"], centroid_ras[:3], atol=1e-3)
        touches = any(np.take(mask, i, axis=a).any() for a in range(3) for i in (0, -1))
        assert entry["flags"] == (["touches_volume_edge"] if touches else [])
        if level in readme_mean:
            assert entry["mean_hu"] == pytest.approx(readme_mean[level], abs=0.005)
            assert entry["body_volume_ml"] == pytest.approx(report[f"vertebrae_{level}_volume_ml"], abs=0.006)
    # T12 is cut by the top of the volume (README: the spine starts at T11, partly).
    assert doc["levels"]["T12"]["flags"] == ["touches_volume_edge"]
    assert doc["flags"] == [] and doc["erosion_mm"] == 3.0 and doc["coordinate_convention"] == "RAS"
    np.testing.assert_array_equal(np.asarray(nib.load(str(labels_out)).dataobj), labels)
    # Every labelled body is a segment with its given level; no confidence (the names came from outside).
    assert [(s["index"], s["level"], s["confidence"]) for s in doc["segments"]] == [
        (1, "T12", None), (2, "L1", None), (3, "L2", None), (4, "L3", None), (5, "L4", None), (6, "L5", None)]
    for segment in doc["segments"]:
        level = doc["levels"][segment["level"]]
        for key in ("mean_hu", "median_hu", "roi_voxels", "body_volume_ml", "centroid_mm", "flags"):
            assert segment[key] == level[key], (segment["level"], key)


def test_erosion_zero_measures_the_whole_body(reference_labels, tmp_path):
    out = tmp_path / "out.json"
    measure(EXAMPLE_CT, "--out", out, "--labels-in", reference_labels, "--erosion-mm", "0")
    for entry in json.loads(out.read_text())["levels"].values():
        assert entry["roi_voxels"] == round(entry["body_volume_ml"] * 1000 / 27)


def test_labels_on_another_grid_are_a_one_line_error_naming_the_file(reference_labels, tmp_path):
    with pytest.raises(CommandError) as error:
        measure(TOTALSEG / "aorta_ct_cropped.nii.gz", "--out", tmp_path / "o.json", "--labels-in", reference_labels)
    assert str(reference_labels) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "o.json").exists()


def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(CommandError, match="missing.nii.gz"):
        measure(missing, "--out", tmp_path / "o.json", "--labels-in", missing)
    not_nifti = tmp_path / "broken.nii.gz"
    not_nifti.write_bytes(b"not an image")
    with pytest.raises(CommandError, match="broken.nii.gz"):
        measure(not_nifti, "--out", tmp_path / "o.json")


def lps_centroid_from_dicom_headers(folder, mask_zyx):
    """LPS centroid from the DICOM tags alone: IPP + column * dx * row cosines + row * dy * column cosines."""
    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(Path(folder).iterdir())]
    normal = np.cross(*np.reshape(np.array(slices[0].ImageOrientationPatient, float), (2, 3)))
    slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    points = []
    for k, j, i in np.argwhere(mask_zyx):
        ds = slices[k]
        row_dir, col_dir = np.reshape(np.array(ds.ImageOrientationPatient, float), (2, 3))
        dy, dx = (float(v) for v in ds.PixelSpacing)
        points.append(np.array(ds.ImagePositionPatient, float) + i * dx * row_dir + j * dy * col_dir)
    return np.mean(points, axis=0)


def test_dicom_input_reports_lps_and_nifti_input_ras(tmp_path):
    folder = TOTALSEG / "example_ct_dicom"
    series = load_volume(folder)
    labels = from_totalsegmentator(TOTALSEG / "example_seg_dicom.nii.gz", like=series)
    labels_path = save_nifti(labels, tmp_path / "labels.nii.gz", like=series)
    as_nifti = save_nifti(series, tmp_path / "ct.nii.gz")

    measure(folder, "--out", tmp_path / "dicom.json", "--labels-in", labels_path)
    measure(as_nifti, "--out", tmp_path / "nifti.json", "--labels-in", labels_path)
    dicom_doc = json.loads((tmp_path / "dicom.json").read_text())
    nifti_doc = json.loads((tmp_path / "nifti.json").read_text())
    # README: T11 and T12 on this grid.
    assert list(dicom_doc["levels"]) == ["T11", "T12"] == list(nifti_doc["levels"])
    assert dicom_doc["coordinate_convention"] == "LPS" and nifti_doc["coordinate_convention"] == "RAS"
    for level, value in (("T11", 18), ("T12", 19)):
        lps = np.array(dicom_doc["levels"][level]["centroid_mm"])
        np.testing.assert_allclose(lps, lps_centroid_from_dicom_headers(folder, labels == value), atol=1e-3)
        np.testing.assert_allclose(nifti_doc["levels"][level]["centroid_mm"], lps * [-1, -1, 1], atol=2e-3)
        assert dicom_doc["levels"][level]["mean_hu"] == nifti_doc["levels"][level]["mean_hu"]
        # 20 slices of 2 mm cut both vertebrae; the series is contrast-enhanced (ContrastBolusAgent).
        assert "touches_volume_edge" in dicom_doc["levels"][level]["flags"]
        assert "contrast_exam" in dicom_doc["levels"][level]["flags"]
    assert "contrast_exam" in dicom_doc["flags"]


def test_default_segmenter_path_writes_labels_that_reproduce_the_json(tmp_path):
    # Without --labels-in the default segmenter runs; measuring the label map it wrote must give the
    # same numbers (the JSON and LABELS.nii.gz describe the same bodies on the input grid).
    measure(EXAMPLE_CT, "--out", tmp_path / "seg.json", "--labels-out", tmp_path / "seg.nii.gz",
            "--roi", "mid_body")
    measure(EXAMPLE_CT, "--out", tmp_path / "again.json", "--labels-in", tmp_path / "seg.nii.gz",
            "--roi", "mid_body")
    segmented = json.loads((tmp_path / "seg.json").read_text())
    again = json.loads((tmp_path / "again.json").read_text())
    # The segmenter runs on CPU whatever was asked for; the JSON says where it ran.
    assert segmented["segmenter"]["device"] == "cpu"
    assert segmented["segmenter"]["name"] == "default" and again["segmenter"]["name"] == "labels-in"
    # How the levels were named (anchors used, levels withheld) travels with the numbers.
    assert any("anchor" in note or "sacrum" in note or "rib" in note for note in segmented["segmenter"]["notes"])
    assert {"load", "segmentation", "measure", "total"} <= set(segmented["timings_s"])
    assert segmented["levels"]
    assert segmented["roi"] == again["roi"] == "mid_body"
    for level, entry in segmented["levels"].items():
        for key in ("mean_hu", "median_hu", "roi_voxels", "body_volume_ml", "centroid_mm"):
            assert again["levels"][level][key] == entry[key], (level, key)


def test_default_segmenter_lists_every_segment_and_writes_their_indices(tmp_path):
    # SPEC section 6: OUT.json "segments" (named or not, index 1 at the head end) and --segments-out.
    out, segments_out = tmp_path / "seg.json", tmp_path / "segments.nii.gz"
    measure(EXAMPLE_CT, "--out", out, "--segments-out", segments_out, "--device", "cuda")
    doc = json.loads(out.read_text())
    assert doc["segmenter"]["device"] == "cpu"
    segments = doc["segments"]
    assert [s["index"] for s in segments] == list(range(1, len(segments) + 1))
    assert {"index", "level", "confidence", "centroid_mm", "mean_hu", "median_hu", "roi_voxels", "body_volume_ml",
            "flags"} <= set(segments[0])
    named = [s for s in segments if s["level"]]
    assert [s["level"] for s in named] == list(doc["levels"]) == ["T12", "L1", "L2", "L3", "L4", "L5"]
    for segment in named:
        assert segment["confidence"] == doc["level_confidence"][segment["level"]]
        level = doc["levels"][segment["level"]]
        for key in ("mean_hu", "median_hu", "roi_voxels", "body_volume_ml", "centroid_mm"):
            assert segment[key] == level[key], (segment["level"], key)
    # Unnamed segments (the sacrum below L5) are measured too.
    unnamed = [s for s in segments if not s["level"]]
    assert unnamed and all(s["confidence"] is None and s["roi_voxels"] > 0 for s in unnamed)
    written = np.asarray(nib.load(str(segments_out)).dataobj)
    assert written.dtype == np.uint8 and set(np.unique(written)) == {0} | {s["index"] for s in segments}
    ct = load_nifti(EXAMPLE_CT)
    for segment in segments:
        body = written == segment["index"]
        assert segment["body_volume_ml"] == pytest.approx(body.sum() * np.prod(ct.spacing) / 1000, abs=1e-4)


def test_segments_out_must_be_nifti(tmp_path):
    with pytest.raises(CommandError, match="--segments-out must end in .nii or .nii.gz"):
        measure(EXAMPLE_CT, "--out", tmp_path / "o.json", "--segments-out", tmp_path / "s.txt")

"""The segmentation network (analysis/segmentation/network) on CPU with a tiny configuration.

Training on CPU is slow on a shared machine, so the tiny configuration (3 stages of 4-16 channels, 4 mm
grid, 32^3 windows, 10 steps per epoch) is shared by every test, and torch runs one thread per process
(``BMDSITE_TORCH_THREADS=1``; see :func:`analysis.segmentation.network.inference.resolve_device`).
"""

import hashlib
import io
import json
import os
import signal

import nibabel as nib
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from analysis.imaging.phantom import make_spine_phantom
from analysis.imaging.volume import load_nifti, save_nifti
from analysis.segmentation.levels import VERSE_LABEL

torch = pytest.importorskip("torch")

TINY = {
    "architecture": {"name": "vbnet", "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "blocks": [1, 1, 1]},
    "preprocessing": {"orientation": "LPS", "spacing_mm": [4.0, 4.0, 4.0], "hu_window": [-1000.0, 1500.0]},
    "inference": {"roi_size": [32, 32, 32], "overlap": 0.25, "sw_batch_size": 2, "threshold": 0.5},
    "training": {"steps_per_epoch": 10, "batch_size": 2, "learning_rate": 1e-3, "crop_size": [32, 32, 32]},
}
TRAIN = [{"kind": "phantom", "levels": ["T12", "L1", "L2"], "seed": 0, "spacing": [3.0, 3.0, 3.0]}]
# Held out: another noise draw, stored RAS (x and y flipped), osteoporotic marrow (half the default HU).
HELD_OUT = [{"kind": "phantom", "levels": ["T12", "L1", "L2"], "seed": 5, "spacing": [3.0, 3.0, 3.0],
             "orientation": "RAS", "trabecular_scale": 0.5}]
WAIT_S = 600  # generous: two epochs of tiny training take ~20 s alone, several minutes on a loaded 2-core machine


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    monkeypatch.setenv("BMDSITE_TORCH_THREADS", "1")


def _cases(sources):
    from analysis.segmentation.network.training import load_source

    return [load_source(s, TINY["preprocessing"]) for s in sources]


def _train(epochs, **kwargs):
    from analysis.segmentation.network.training import train

    return train(_cases(TRAIN), _cases(HELD_OUT), architecture=TINY["architecture"], inference=TINY["inference"],
                 training=TINY["training"], epochs=epochs, seed=0, **kwargs)


def _state(weights):
    return torch.load(io.BytesIO(weights), weights_only=True)


def test_web_process_and_job_modules_do_not_load_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, django; django.setup(); import bmdsite.urls, analysis.tasks, analysis.models, "
            "analysis.segmentation.network.registry, analysis.segmentation.network.segmenter, "
            "analysis.segmentation.network.training, analysis.management.commands.measure_volume; "
            "print(sorted(m for m in ('torch', 'monai', 'SimpleITK') if m in sys.modules))")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="bmdsite.settings")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- preprocessing -----------------------------------------------------------------------------------------

def test_orientation_does_not_change_what_the_network_sees():
    from analysis.segmentation.network.preprocess import to_network

    lps = make_spine_phantom(spacing=(2.0, 2.0, 2.0), levels=("L1", "L2"), noise_sd=0, dtype=np.float32)
    ras = make_spine_phantom(spacing=(2.0, 2.0, 2.0), levels=("L1", "L2"), noise_sd=0, dtype=np.float32,
                             orientation="RAS")
    a, grid_a, lab_a = to_network(lps.volume, {"spacing_mm": [2.0, 2.0, 2.0]}, labels=lps.body_labels)
    b, grid_b, lab_b = to_network(ras.volume, {"spacing_mm": [2.0, 2.0, 2.0]}, labels=ras.body_labels)
    # The same analytic phantom sampled at the same LPS points: the network grid is the same and, at the
    # network's own spacing, resampling only permutes voxels, so the arrays are equal.
    assert grid_a.shape == grid_b.shape == lps.volume.shape
    np.testing.assert_allclose(grid_a.origin_lps, grid_b.origin_lps, atol=1e-9)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_array_equal(lab_a, lps.body_labels)


def test_labels_go_back_to_the_input_grid_exactly():
    from analysis.segmentation.network.preprocess import to_input, to_network

    ras = make_spine_phantom(spacing=(2.0, 2.0, 2.0), levels=("L1", "L2"), noise_sd=0, orientation="RAS")
    _, grid, labels = to_network(ras.volume, {"spacing_mm": [2.0, 2.0, 2.0]}, labels=ras.body_labels)
    np.testing.assert_array_equal(to_input(labels, grid, ras.volume, nearest=True), ras.body_labels)


# -- training, checkpoints, resumption ---------------------------------------------------------------------

def test_resumed_training_repeats_the_uninterrupted_run():
    whole = _train(2)
    saved = {}
    first = _train(1, save_checkpoint=lambda epoch, data: saved.update({epoch: data}))
    assert sorted(saved) == [1]
    resumed = _train(2, load_checkpoint=lambda: saved[1], attempt=1)
    a, b = _state(whole.weights), _state(resumed.weights)
    assert a.keys() == b.keys()
    # Seeded per epoch and one thread: the resumed run is bit for bit the uninterrupted one.
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [e["event"] for e in resumed.log] == ["start", "epoch", "start", "epoch"]
    assert [(e.get("attempt"), e.get("epoch"), e.get("from_epoch")) for e in resumed.log] == [
        (0, None, 0), (0, 1, None), (1, None, 1), (1, 2, None)]
    assert resumed.log[1] == first.log[1]
    assert resumed.log[3]["loss"] == whole.log[2]["loss"]
    assert set(resumed.metrics["dice_per_level"]) == {"T12", "L1", "L2"}


@pytest.mark.services
def test_training_job_killed_after_first_checkpoint_resumes_and_records_both_attempts(rq_worker, project):
    from analysis.models import SegmenterVersion
    from analysis.tasks import submit_segmenter_training
    from studies import jobs
    from studies.models import JobState
    from tests.conftest import child_pids, process_gone, wait_for

    job = submit_segmenter_training(project, name="tiny-killed", train_sources=TRAIN, held_out_sources=HELD_OUT,
                                    epochs=2, seed=0, architecture=TINY["architecture"],
                                    preprocessing=TINY["preprocessing"], inference=TINY["inference"],
                                    training=TINY["training"])
    assert job.queue == "gpu" and job.params["code_version"]
    env = {"BMDSITE_TORCH_THREADS": "1"}
    worker = rq_worker("gpu", extra_env=env)

    def first_checkpoint():
        job.refresh_from_db()
        assert job.state in (JobState.QUEUED, JobState.RUNNING), (job.state, job.error, worker.output()[-2000:])
        return "checkpoint 1 saved" in job.message or "epoch 2/2" in job.message

    wait_for(first_checkpoint, timeout=WAIT_S, interval=0.05, what="the first checkpoint")
    horses = child_pids(worker.pid)
    worker.horses.extend(horses)
    os.killpg(worker.pid, signal.SIGKILL)
    for horse in horses:
        os.killpg(horse, signal.SIGKILL)
    worker.wait(timeout=30)
    for horse in horses:
        wait_for(lambda: process_gone(horse), timeout=120, what="the work horse to die")
    wait_for(lambda: jobs.reconcile() or (job.refresh_from_db() or job.state == JobState.FAILED), timeout=120,
             what="the killed job to be marked failed")
    assert default_storage.exists(f"segmenters/checkpoints/tiny-killed-job{job.pk}/epoch0001.pt")
    assert not SegmenterVersion.objects.filter(name="tiny-killed").exists()

    jobs.retry(job)
    rq_worker("gpu", burst=True, extra_env=env).wait(timeout=WAIT_S)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    version = SegmenterVersion.objects.get(name="tiny-killed")
    # Both attempts, honestly: attempt 0 trained epoch 1 and was killed; attempt 1 resumed from its checkpoint.
    assert [(e["event"], e["attempt"], e.get("epoch", e.get("from_epoch"))) for e in version.training_log] == [
        ("start", 0, 0), ("epoch", 0, 1), ("start", 1, 1), ("epoch", 1, 2)]
    assert job.result["attempts"] == [0, 1] and job.result["segmenter_version"] == version.pk
    assert version.training_job_id == job.pk and version.label_map == {"1": "body"}
    with version.weights.open("rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == version.weights_sha256
    assert set(version.metrics["dice_per_level"]) == {"T12", "L1", "L2"}
    assert version.training_data["train"] == TRAIN and version.training_data["held_out"] == HELD_OUT
    assert not default_storage.exists(f"segmenters/checkpoints/tiny-killed-job{job.pk}")


def test_training_names_that_are_not_plain_file_names_are_refused(db, project):
    from analysis.tasks import submit_segmenter_training

    for name in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="use 1-100 letters"):
            submit_segmenter_training(project, name=name, train_sources=TRAIN, held_out_sources=[])


def test_worker_refuses_a_job_submitted_by_other_code(db, project):
    from studies import jobs
    from studies.models import JobState

    job = jobs.submit("analysis.train_segmenter", project=project, queue="gpu", project_id=project.pk, name="never",
                      train_sources=TRAIN,
                      held_out_sources=[], epochs=1, code_version="git:0000000-someone-else")
    with pytest.raises(ValueError, match="update the worker"):
        jobs.execute(row_id=job.pk, attempt=job.attempts)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "git:0000000-someone-else" in job.error


# -- versions, registry, measure_volume --------------------------------------------------------------------

def _version(project, name, weights):
    from analysis.models import SegmenterVersion

    version = SegmenterVersion(project=project, name=name, weights_sha256=hashlib.sha256(weights).hexdigest(),
                               architecture=TINY["architecture"], preprocessing=TINY["preprocessing"],
                               inference=TINY["inference"], label_map={"1": "body"})
    version.weights.save(f"{name}.pt", ContentFile(weights), save=False)
    version.save()
    return version


def _untrained_weights():
    from analysis.segmentation.network.architecture import build_network

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(build_network(TINY["architecture"]).state_dict(), buffer)
    return buffer.getvalue()


def test_default_is_the_promoted_version_else_the_rule_based_one(db, project):
    from auditlog.models import LogEntry

    from analysis.segmentation.network.registry import RuleBasedSegmenter, promote, resolve_segmenter
    from analysis.segmentation.network.segmenter import NetworkSegmenter

    assert isinstance(resolve_segmenter(None, project=project), RuleBasedSegmenter)
    first = _version(project, "net-a", _untrained_weights())
    second = _version(project, "net-b", _untrained_weights())
    assert isinstance(resolve_segmenter(None, project=project), RuleBasedSegmenter)
    promote(first)
    chosen = resolve_segmenter(None, project=project)
    assert isinstance(chosen, NetworkSegmenter) and chosen.name == "net-a"
    promote(second)
    first.refresh_from_db()
    assert not first.promoted and resolve_segmenter(None, project=project).name == "net-b"
    assert resolve_segmenter("anatomy", project=project).name == "anatomy"
    # Audited: promoted, then demoted when net-b was promoted.
    updates = LogEntry.objects.get_for_object(first).filter(action=LogEntry.Action.UPDATE)
    assert [e.changes_dict["promoted"] for e in updates.order_by("timestamp")] == [["False", "True"], ["True", "False"]]


def test_measure_volume_with_a_trained_version_writes_json_and_label_maps(db, project, tmp_path):
    outcome = _train(1)
    _version(project, "tiny-trained", outcome.weights)
    phantom = make_spine_phantom(spacing=(3.0, 3.0, 3.0), levels=("T12", "L1", "L2"), random_state=7)
    ct = tmp_path / "ct.nii.gz"
    save_nifti(phantom.volume, ct)
    out, labels, segments = tmp_path / "out.json", tmp_path / "labels.nii.gz", tmp_path / "segments.nii.gz"
    call_command("measure_volume", str(ct), "--out", str(out), "--labels-out", str(labels), "--segments-out",
                 str(segments), "--segmenter", "tiny-trained")
    document = json.loads(out.read_text())
    digest = hashlib.sha256(outcome.weights).hexdigest()
    assert document["segmenter"]["name"] == "tiny-trained"
    assert document["segmenter"]["version"] == f"tiny-trained:{digest[:12]}"
    assert document["segmenter"]["device"] == "cpu"
    assert {"resample", "network", "labelling"} <= {k.removeprefix("segmentation_") for k in document["timings_s"]}
    source = nib.load(str(ct))
    for path in (labels, segments):
        img = nib.load(str(path))
        assert img.shape == source.shape
        np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
    seg_values = {int(v) for v in np.unique(np.asarray(nib.load(str(segments)).dataobj))} - {0}
    assert seg_values == {s["index"] for s in document["segments"]}
    named = {s["level"] for s in document["segments"] if s["level"]}
    label_values = {int(v) for v in np.unique(np.asarray(nib.load(str(labels)).dataobj))} - {0}
    assert label_values == {VERSE_LABEL[level] for level in named}


def test_damaged_weights_are_refused_naming_the_version(db, project, tmp_path):
    version = _version(project, "damaged", _untrained_weights())
    path = version.weights.path
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    phantom = make_spine_phantom(spacing=(4.0, 4.0, 4.0), levels=("L1",), noise_sd=0)
    ct = tmp_path / "ct.nii.gz"
    save_nifti(phantom.volume, ct)
    with pytest.raises(CommandError, match="segmenter damaged: weights file .* SHA-256"):
        call_command("measure_volume", str(ct), "--out", str(tmp_path / "o.json"), "--segmenter", "damaged")
    with pytest.raises(CommandError, match="no segmenter named 'missing'"):
        call_command("measure_volume", str(ct), "--out", str(tmp_path / "o.json"), "--segmenter", "missing")


# -- MONAI bundles -----------------------------------------------------------------------------------------

def _bone_bundle(folder, threshold_hu=100.0):
    """A MONAI bundle whose 'network' is a 1x1x1 convolution: class 1 where the windowed intensity is above
    ``threshold_hu``, class 2 (an organ) never, class 0 elsewhere."""
    from analysis.segmentation.network.preprocess import window

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps({
        "network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 3, "kernel_size": 1}}))
    cut = float(window(np.array([threshold_hu]), (-1000.0, 1500.0))[0])
    conv = torch.nn.Conv3d(1, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 1000.0, 0.0]).reshape(3, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -1000.0 * cut, -1000.0]))
    torch.save(conv.state_dict(), folder / "models" / "model.pt")
    (folder / "bmdsite_labels.json").write_text(json.dumps({
        "labels": {"1": "vertebrae_L1", "2": "liver"}, "spacing_mm": [2.0, 2.0, 2.0], "hu_window": [-1000, 1500],
        "roi_size": [64, 64, 64]}))
    return folder


def test_bundle_classes_map_to_our_levels():
    from analysis.segmentation.network.bundle import BundleError, class_levels

    # TotalSegmentator v1 vertebra names (the model zoo's whole-body CT bundle), our "body" and an organ.
    assert class_levels({"18": "vertebrae_L1", "19": "vertebrae_T12", "3": "body", "5": "liver"}) == {
        18: "L1", 19: "T12", 3: "body"}
    with pytest.raises(BundleError, match="labels.json: no class is mapped"):
        class_levels({"5": "liver"}, source="labels.json")


def test_bundle_built_by_the_test_segments_through_measure_volume(tmp_path):
    bundle = _bone_bundle(tmp_path / "bone_bundle")
    phantom = make_spine_phantom(spacing=(2.0, 2.0, 2.0), levels=("L1", "L2"), noise_sd=0, orientation="RAS")
    ct = tmp_path / "ct.nii.gz"
    save_nifti(phantom.volume, ct)
    out, labels = tmp_path / "out.json", tmp_path / "labels.nii.gz"
    call_command("measure_volume", str(ct), "--out", str(out), "--labels-out", str(labels), "--segmenter", str(bundle))
    document = json.loads(out.read_text())
    assert document["segmenter"]["name"] == "bundle:bone_bundle"
    written = load_nifti(labels).array
    hu = load_nifti(ct).array
    # The bundle's grid (2 mm, LPS) holds the RAS input's voxels exactly, so its class 1 (L1 = VerSe 20) is
    # exactly the voxels above 100 HU (bone; the noiseless phantom has nothing between 80 and 150 HU).
    np.testing.assert_array_equal(written, np.where(hu > 100, VERSE_LABEL["L1"], 0))
    assert [s["level"] for s in document["segments"]] == ["L1"]


def test_bundle_without_label_map_is_refused_naming_the_file(tmp_path):
    bundle = _bone_bundle(tmp_path / "b")
    (bundle / "bmdsite_labels.json").unlink()
    phantom = make_spine_phantom(spacing=(4.0, 4.0, 4.0), levels=("L1",), noise_sd=0)
    ct = tmp_path / "ct.nii.gz"
    save_nifti(phantom.volume, ct)
    with pytest.raises(CommandError, match="bmdsite_labels.json: missing"):
        call_command("measure_volume", str(ct), "--out", str(tmp_path / "o.json"), "--segmenter", str(bundle))


# -- CUDA ----------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_inference_agrees_with_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from analysis.segmentation.network.segmenter import NetworkSegmenter

    segmenter = NetworkSegmenter(name="untrained", version="0", weights=_untrained_weights(),
                                 preprocessing=TINY["preprocessing"], inference=TINY["inference"],
                                 class_levels={1: "body"}, architecture=TINY["architecture"])
    phantom = make_spine_phantom(spacing=(3.0, 3.0, 3.0), levels=("T12", "L1"), random_state=1)
    from analysis.segmentation.network.inference import predict_probability
    from analysis.segmentation.network.preprocess import to_network

    image, _, _ = to_network(phantom.volume, TINY["preprocessing"])
    cpu = predict_probability(segmenter.model("cpu"), image, TINY["inference"], "cpu")
    gpu = predict_probability(segmenter.model("cuda"), image, TINY["inference"], "cuda")
    # float16 autocast on CUDA against float32 on CPU.
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)
    assert segmenter(phantom.volume, device="cuda").device == "cuda"


# -- exam jobs -----------------------------------------------------------------------------------------------

@pytest.fixture
def phantom_exam(db):
    import dataclasses

    from studies.pacs.ingest import store_volume
    from tests.factories import ExamFactory

    phantom = make_spine_phantom(spacing=(2.0, 2.0, 2.0), levels=("L1", "L2"), noise_sd=0)
    volume = dataclasses.replace(phantom.volume, series_uid="1.2.826.0.1.3680043.8.498.13")
    exam = ExamFactory(region="abdomen")
    store_volume(exam.patient.project, volume, exam=exam, source="test")
    return exam, phantom


def test_segment_exam_job_uses_the_chosen_segmenter(phantom_exam, tmp_path):
    from analysis.models import MeasurementRun
    from analysis.modeling.versions import code_version
    from studies import jobs
    from studies.models import JobState

    exam, phantom = phantom_exam
    bundle = _bone_bundle(tmp_path / "bone_bundle")
    job = jobs.submit("analysis.segment_exam", project=exam.patient.project, queue="gpu", exam_id=exam.pk,
                      segmenter=str(bundle), device="cuda", code_version=code_version())
    jobs.execute(row_id=job.pk, attempt=job.attempts)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    run = MeasurementRun.objects.get(pk=job.result["measurement_run"])
    assert run.segmenter_version.startswith("bundle:bone_bundle:")
    # Recorded where it ran: no CUDA on this machine, so the CPU.
    assert run.parameters["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    stored = load_nifti(run.labels.path).array
    np.testing.assert_array_equal(stored, np.where(phantom.volume.array > 100, VERSE_LABEL["L1"], 0))


def test_exam_pipeline_uses_the_promoted_version_by_default(phantom_exam):
    from analysis import pipeline
    from analysis.segmentation.network.registry import promote

    exam, _ = phantom_exam
    assert pipeline.measure_exam(exam).segmenter_version.startswith("anatomy")
    version = _version(exam.patient.project, "promoted-net", _untrained_weights())
    promote(version)
    run = pipeline.measure_exam(exam)
    assert run.segmenter_version == f"promoted-net:{version.weights_sha256[:12]}"


@pytest.mark.parametrize("levels, orientation, anchor", [
    (("T10", "T11", "T12", "L1", "L2"), "RAS", "last rib"),
    (("L1", "L2", "L3", "L4", "L5", "S1"), "LPI", "sacrum"),
])
def test_a_perfect_body_probability_is_split_and_named_like_the_truth(levels, orientation, anchor):
    """The naming step alone, without the rules' body segmentation: given the phantom's exact bodies as the
    network's probability on its 2 mm grid, every body becomes one segment, head first, and takes its true
    level from the rules' ribs (T12 = last rib-bearing vertebra) or sacrum (which is in no network label:
    the rules' body mask stands in for it below the lowest network body). Back on the input grid (1.5 mm
    in-plane), each body overlaps its true body with Dice >= 0.9 (the 2 mm grid's partial-volume loss)."""
    from analysis.segmentation.network.naming import labels_of_segments, name_bodies
    from analysis.segmentation.network.preprocess import resample_hu, to_network
    from analysis.segmentation.network.segmenter import NetworkSegmenter

    phantom = make_spine_phantom(spacing=(2.0, 1.5, 1.5), levels=levels, random_state=3, orientation=orientation)
    preprocessing = {"spacing_mm": [2.0, 2.0, 2.0]}
    hu, grid = resample_hu(phantom.volume, preprocessing)
    _, _, truth = to_network(phantom.volume, preprocessing, labels=phantom.body_labels)
    probability = (truth > 0).astype(np.float32)
    named = name_bodies(hu, grid.spacing_xyz[::-1], probability)
    bodies = [lv for lv in levels if lv != "S1"]
    assert [s.level for s in named.segments] == bodies, (named.segments, named.notes)
    assert all(s.confidence is not None and s.confidence >= 0.5 for s in named.segments), named.segments
    assert any(anchor in note for note in named.notes), named.notes
    # On the network grid every segment is exactly one true body.
    np.testing.assert_array_equal(labels_of_segments(named.segment_grid, named.segments), truth)
    on_input = labels_of_segments(NetworkSegmenter._segments_on_input(named, probability, grid, phantom.volume, 0.5),
                                  named.segments)
    for level in bodies:
        mine, true = on_input == VERSE_LABEL[level], phantom.body_labels == VERSE_LABEL[level]
        assert 2 * (mine & true).sum() / (mine.sum() + true.sum()) >= 0.9, level


# -- training from reviewed cases ----------------------------------------------------------------------------

def _review_case(exam, status):
    from analysis import pipeline
    from studies.review.models import ReviewCase

    run = pipeline.measure_exam(exam)
    return ReviewCase.objects.create(project=exam.patient.project, exam=exam, base_run=run, status=status)


def test_training_from_reviewed_cases_records_the_accepted_runs_it_used(phantom_exam):
    """A ``reviewed`` source becomes the runs of the cases accepted in review (not the pending ones), the
    training job trains on them, and the version's data list names each run, its case and exam."""
    from analysis.models import SegmenterVersion
    from analysis.tasks import submit_segmenter_training
    from studies import jobs
    from studies.models import JobState
    from studies.review.models import CaseStatus

    exam, _ = phantom_exam
    accepted = _review_case(exam, CaseStatus.ACCEPTED)
    _review_case(_second_exam(exam), CaseStatus.PENDING)

    job = submit_segmenter_training(exam.patient.project, name="from-review", train_sources=[{"kind": "reviewed"}],
                                    held_out_sources=HELD_OUT, epochs=1, seed=0, **TINY)
    expected = [{"kind": "measurement_run", "id": accepted.base_run_id, "review_case": accepted.pk, "exam": exam.pk}]
    assert job.params["train_sources"] == expected
    jobs.execute(row_id=job.pk, attempt=job.attempts)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    version = SegmenterVersion.objects.get(name="from-review")
    assert version.training_data["train"] == expected
    assert [e["event"] for e in version.training_log] == ["start", "epoch"]


def test_training_from_review_without_accepted_cases_is_refused(phantom_exam):
    from analysis.tasks import submit_segmenter_training
    from studies.review.models import CaseStatus

    exam, _ = phantom_exam
    _review_case(exam, CaseStatus.PENDING)
    with pytest.raises(ValueError, match="no case accepted in review"):
        submit_segmenter_training(exam.patient.project, name="nothing-reviewed", train_sources=[{"kind": "reviewed"}],
                                  held_out_sources=HELD_OUT, epochs=1, **TINY)
    accepted = _review_case(_second_exam(exam), CaseStatus.ACCEPTED)
    with pytest.raises(ValueError, match=rf"\[{accepted.base_run_id}\] are both training and held-out"):
        submit_segmenter_training(exam.patient.project, name="overlap", train_sources=[{"kind": "reviewed"}],
                                  held_out_sources=[{"kind": "reviewed"}], epochs=1, **TINY)


def _second_exam(exam):
    import dataclasses

    from studies.pacs.ingest import store_volume
    from tests.factories import ExamFactory

    other = ExamFactory(region="abdomen", patient__project=exam.patient.project)
    phantom = make_spine_phantom(spacing=(2.0, 2.0, 2.0), levels=("T12", "L1"), noise_sd=0, random_state=4)
    store_volume(other.patient.project, dataclasses.replace(phantom.volume, series_uid="1.2.826.0.1.3680043.8.498.14"),
                 exam=other, source="test")
    return other


# -- training data ---------------------------------------------------------------------------------------------

def test_bodies_derived_from_whole_vertebrae_match_totalsegmentators_body_mask(shared_data):
    """example_ct has both TotalSegmentator's whole vertebrae (``totalseg.nii.gz``) and its body mask
    (``totalseg_vertebrae_body.nii.gz``, label 1): the bodies derived from the whole vertebrae on a 2 mm
    network grid (the part in front of the canal) agree with the whole vertebrae within that body mask, level
    by level (measured Dice 0.95-0.99; the whole vertebrae are 1.4-1.6x the body volume, Dice about 0.8)."""
    from analysis.segmentation.external import from_totalsegmentator, restrict_to_body
    from analysis.segmentation.network.preprocess import to_network
    from analysis.segmentation.network.training import bodies_of_vertebrae

    folder = shared_data / "totalseg"
    ct = load_nifti(folder / "example_ct.nii.gz")
    whole = from_totalsegmentator(folder / "spine_report" / "totalseg.nii.gz", like=ct)
    body = restrict_to_body(whole, load_nifti(folder / "spine_report" / "totalseg_vertebrae_body.nii.gz").array)
    preprocessing = {"spacing_mm": [2.0, 2.0, 2.0]}
    _, _, whole_grid = to_network(ct, preprocessing, labels=whole)
    _, _, truth = to_network(ct, preprocessing, labels=body)
    derived = bodies_of_vertebrae(whole_grid, [2.0, 2.0, 2.0])
    for level in ("T12", "L1", "L2", "L3", "L4", "L5"):
        value = VERSE_LABEL[level]
        mine, true, all_of_it = derived == value, truth == value, whole_grid == value
        assert 2 * (mine & true).sum() / (mine.sum() + true.sum()) >= 0.93, level
        assert 2 * (all_of_it & true).sum() / (all_of_it.sum() + true.sum()) < 0.85, level


def test_tilted_phantom_shows_an_inclined_spine_on_the_network_grid():
    """``tilt_deg`` rotates the phantom's affine about the left-right axis: on the LPS network grid the body
    centroids (a straight vertical column in the untilted phantom) run along a line inclined by that angle
    in the sagittal (S, P) plane, and none move sideways."""
    from analysis.segmentation.network.training import load_source

    preprocessing = {"spacing_mm": [2.0, 2.0, 2.0]}
    source = {"kind": "phantom", "levels": ["T12", "L1", "L2", "L3"], "noise_sd": 0.0, "spacing": [2.0, 2.0, 2.0]}
    for tilt in (0.0, 12.0):
        case = load_source({**source, "tilt_deg": tilt}, preprocessing)
        centroids = np.array([np.argwhere(case.levels == VERSE_LABEL[lv]).mean(axis=0) for lv in source["levels"]])
        slope_p = np.polyfit(centroids[:, 0], centroids[:, 1], 1)[0]  # rows (P) per slice (S), same spacing
        slope_l = np.polyfit(centroids[:, 0], centroids[:, 2], 1)[0]
        assert np.degrees(np.arctan(abs(slope_p))) == pytest.approx(tilt, abs=1.0)
        assert abs(slope_l) < 0.02


def test_contrast_aorta_is_painted_beside_the_bodies_and_not_labelled():
    """``contrast_hu`` paints a 22 mm aorta of that HU in front of the bodies: the image there reads the
    contrast HU (noise 0), the body labels are unchanged."""
    from analysis.segmentation.network.preprocess import window
    from analysis.segmentation.network.training import load_source

    preprocessing = {"spacing_mm": [2.0, 2.0, 2.0], "hu_window": [-250.0, 1250.0]}
    source = {"kind": "phantom", "levels": ["L1", "L2"], "noise_sd": 0.0, "spacing": [2.0, 2.0, 2.0]}
    plain = load_source(source, preprocessing)
    painted = load_source({**source, "contrast_hu": 300.0}, preprocessing)
    np.testing.assert_array_equal(plain.levels, painted.levels)
    changed = painted.image != plain.image
    assert not (changed & (painted.levels > 0)).any()
    # About a 22 mm disk per slice: pi * 11^2 / 4 mm^2 = 95 voxels (fewer where it leaves the body's slices).
    per_slice = changed.sum(axis=(1, 2))
    assert 70 <= np.median(per_slice[per_slice > 0]) <= 100
    np.testing.assert_allclose(painted.image[changed], window(300.0, preprocessing["hu_window"]), atol=1e-6)

"""`manage.py pull_series` and `manage.py export_volume` end to end against a real Orthanc (SPEC section 6):
exact HU, affine in RAS matching the source geometry, one-line reasons and non-zero exits on bad input."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from analysis.imaging.dicom_writer import write_ct_series
from analysis.imaging.volume import Volume
from studies.models import Project
from studies.pacs.models import PacsConnection, StoredSeries
from tests.conftest import REPO


def oblique_phantom():
    """Integer HU on a grid with every geometric trap: anisotropic spacing, origin off zero, rows and columns
    not along x/y (axial plane rotated 30 degrees about z: still axial, not tilted)."""
    rng = np.random.default_rng(5)
    array = rng.integers(-1024, 2000, size=(9, 30, 34), dtype=np.int16)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    affine = np.eye(4)
    affine[:3, 0] = np.array([c, s, 0]) * 0.6  # column step (i): 0.6 mm
    affine[:3, 1] = np.array([-s, c, 0]) * 0.8  # row step (j): 0.8 mm
    affine[:3, 2] = [0, 0, 2.5]  # slice step (k): 2.5 mm
    affine[:3, 3] = [-120.0, 35.5, -410.25]
    return Volume(array=array, affine=affine)


@pytest.fixture
def pulled(orthanc, tmp_path):
    volume = oblique_phantom()
    files = write_ct_series(volume, tmp_path / "series", patient_id="CMD-1")
    orthanc.stow(files)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return volume, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def run(*args):
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_pull_series_by_url_then_export(db, orthanc, pulled, pacs_storage, tmp_path):
    volume, study, series = pulled
    out, err = run("pull_series", "--url", orthanc.url, "--study", study)
    assert out.splitlines() == [series]
    assert f"{series}: chosen:" in err  # the selection's reasons go to stderr
    stored = StoredSeries.objects.get()
    assert stored.project.name == "default"  # created when missing

    nifti = tmp_path / "out.nii.gz"
    run("export_volume", "--series", series, "--out", str(nifti))
    img = nib.load(str(nifti))
    assert img.get_data_dtype() == np.int16
    # Exact HU: the file's (i, j, k) data is the written volume transposed.
    np.testing.assert_array_equal(np.asarray(img.dataobj), volume.array.transpose(2, 1, 0))
    # RAS affine = diag(-1, -1, 1) @ the LPS geometry the series was written with.
    np.testing.assert_allclose(img.affine, np.diag([-1, -1, 1, 1]) @ volume.affine, atol=1e-5)


def test_pull_series_by_connection_name_into_a_project(db, orthanc, pulled, pacs_storage):
    volume, study, series = pulled
    PacsConnection.objects.create(name="main", base_url=orthanc.url)
    out, _ = run("pull_series", "--pacs", "main", "--study", study, "--series", series, "--project", "Lumbar")
    assert out.splitlines() == [series]
    out, _ = run("pull_series", "--pacs", "main", "--study", study, "--series", series, "--project", "Lumbar")
    assert out.splitlines() == [series]  # again: same UID printed, nothing duplicated
    assert StoredSeries.objects.filter(project__name="Lumbar").count() == 1
    assert Project.objects.filter(name="Lumbar").count() == 1


@pytest.mark.parametrize("args, reason", [
    (["--pacs", "nowhere", "--study", "1.2.3"], "no PACS connection named 'nowhere'"),
    (["--url", "ftp://x/dicom-web", "--study", "1.2.3"], "not an http(s) URL"),
    (["--url", "{orthanc}", "--study", "1.2.3.4"], "the PACS has no series in study 1.2.3.4"),
])
def test_pull_series_bad_input_is_one_line(db, orthanc, pacs_storage, args, reason):
    args = [a.replace("{orthanc}", orthanc.url) for a in args]
    with pytest.raises(CommandError) as info:
        run("pull_series", *args)
    assert reason in str(info.value) and "\n" not in str(info.value)
    assert not StoredSeries.objects.exists()


def test_export_volume_unknown_series(db, tmp_path):
    with pytest.raises(CommandError, match="no stored series 9.9.9"):
        run("export_volume", "--series", "9.9.9", "--out", str(tmp_path / "x.nii.gz"))
    with pytest.raises(CommandError, match="must end in .nii.gz"):
        run("export_volume", "--series", "9.9.9", "--out", str(tmp_path / "x.npz"))


def test_commands_exit_non_zero_as_processes(tmp_path):
    """What scripts see: exit status 1 and the reason on stderr (no database or PACS needed for these)."""
    for args in (["pull_series", "--study", "1.2.3"], ["export_volume", "--series", "1", "--out", "x.npz"]):
        proc = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode != 0
        assert ("one of the arguments --pacs --url is required" in proc.stderr
                or "must end in .nii.gz" in proc.stderr), proc.stderr

"""A real Orthanc with its DICOMweb plugin, started by the tests on free loopback ports with a temporary
storage folder, loaded through STOW-RS; plus a private storage root for stored volumes.

``orthanc`` is one server per test module (started once, data loaded by the tests that need it);
``orthanc_factory`` starts more (with basic auth, or to be killed and restarted on the same storage).
"""

import os
from pathlib import Path

import pytest

from tests.conftest import missing_service, which_or_missing
from tests.studies.pacs.orthanc import DICOMWEB_PLUGIN, ORTHANC, OrthancServer


@pytest.fixture(scope="module")
def orthanc_binary():
    which_or_missing(ORTHANC, "orthanc")
    if not os.path.exists(DICOMWEB_PLUGIN):
        missing_service(f"{DICOMWEB_PLUGIN} not installed (Debian package orthanc-dicomweb)")
    return ORTHANC


@pytest.fixture
def orthanc_factory(orthanc_binary, tmp_path_factory):
    """Factory: orthanc_factory(users={"name": "password"}) -> a started :class:`OrthancServer`."""
    servers = []

    def make(users=None):
        server = OrthancServer(tmp_path_factory.mktemp("orthanc"), users=users)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def orthanc(orthanc_binary, tmp_path_factory):
    """One Orthanc for the module; yields the server (``.url`` is the DICOMweb root)."""
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture
def pacs_storage(settings, tmp_path):
    """A private STORAGE_ROOT for the volumes of one test."""
    root = tmp_path / "storage"
    root.mkdir()
    settings.STORAGE_ROOT = root
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}}}
    return root


def stored_files(root: Path):
    """Every file under a storage root (volumes and leftovers of any temporary folder)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

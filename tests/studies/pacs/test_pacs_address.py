"""Where a PACS may be: never a cloud metadata service, a link-local, multicast or unspecified address;
loopback only where PACS_ALLOW_LOOPBACK is on (development and these tests); private networks allowed.
Checked when a connection is saved and again by the client when it connects (the name is resolved then, and
the socket goes to the address that was checked)."""

import pytest
from django.urls import reverse

from studies.pacs.client import Endpoint, PacsClient, PacsError, address_refusal
from studies.pacs.forms import PacsConnectionAdminForm, PacsConnectionForm
from studies.pacs.models import PacsConnection
from tests.factories import UserFactory
from tests.studies.pacs.test_client_safety import Recorder

FORM = {"name": "p", "auth": "none", "username": "", "secret": "", "connect_timeout_s": 5, "read_timeout_s": 30,
        "max_retries": 0}

REFUSED = [
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata address"),
    ("http://169.254.10.20/dicom-web", "169.254.10.20 is a link-local address"),
    ("http://[fe80::1]/dicom-web", "fe80::1 is a link-local address"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
    ("http://100.100.100.200/", "100.100.100.200 is a cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/", "169.254.169.254 is a cloud metadata address"),
    ("http://224.0.0.1/dicom-web", "224.0.0.1 is a multicast address"),
    ("http://0.0.0.0:8042/dicom-web", "0.0.0.0 is the unspecified address"),
    ("http://metadata.google.internal/computeMetadata/v1", "metadata.google.internal: a cloud metadata service"),
]


@pytest.mark.parametrize("url, reason", REFUSED)
def test_the_connection_form_refuses_metadata_and_link_local_addresses(db, url, reason):
    form = PacsConnectionForm({**FORM, "base_url": url})
    assert not form.is_valid()
    assert reason in form.errors["base_url"][0]
    # The Django admin's form runs the same check.
    admin_form = PacsConnectionAdminForm({**FORM, "base_url": url})
    assert not admin_form.is_valid() and reason in admin_form.errors["base_url"][0]


@pytest.mark.parametrize("url", ["http://10.1.2.3/dicom-web", "https://192.168.20.5:8443/dicom-web",
                                 "http://172.16.0.9/orthanc/dicom-web", "http://[fd12:3456::5]/dicom-web"])
def test_private_networks_are_allowed(db, url):
    """Hospital PACS live on private networks; an IP literal resolves without any network traffic."""
    form = PacsConnectionForm({**FORM, "base_url": url})
    assert form.is_valid(), form.errors


def test_loopback_only_where_allowed(db, settings):
    settings.PACS_ALLOW_LOOPBACK = False
    form = PacsConnectionForm({**FORM, "base_url": "http://localhost:8042/dicom-web"})
    assert not form.is_valid()
    assert "is a loopback address (allowed only with PACS_ALLOW_LOOPBACK)" in form.errors["base_url"][0]
    settings.PACS_ALLOW_LOOPBACK = True
    assert PacsConnectionForm({**FORM, "base_url": "http://localhost:8042/dicom-web"}).is_valid()


def test_an_unresolvable_host_is_a_form_error(db):
    form = PacsConnectionForm({**FORM, "base_url": "http://no-such-host.invalid/dicom-web"})
    assert not form.is_valid()
    assert "the host name no-such-host.invalid does not resolve from this server" in form.errors["base_url"][0]


def test_the_page_refuses_the_metadata_address(client, db):
    client.force_login(UserFactory(is_superuser=True))
    page = client.post(reverse("studies:pacs_connection_add"),
                       {**FORM, "base_url": "http://169.254.169.254/latest/meta-data"})
    assert page.status_code == 200 and "169.254.169.254 is a cloud metadata address" in page.content.decode()
    assert not PacsConnection.objects.exists()


def test_the_client_refuses_at_connect_time_and_sends_nothing(settings):
    """A stored connection whose name now resolves to a refused address (DNS rebinding, or a row written
    before the check): ``localhost`` resolves to loopback, which is refused here, and the server listening
    there receives no request."""
    settings.PACS_ALLOW_LOOPBACK = False
    server = Recorder()
    try:
        port = server.server.server_address[1]
        client = PacsClient(Endpoint(f"http://localhost:{port}/dicom-web", max_retries=2))
        with pytest.raises(PacsError, match=r"refused to contact localhost \(127\.0\.0\.1\): 127\.0\.0\.1 is a "
                                            r"loopback address"):
            client.search_studies(patient_id="P1")
        with pytest.raises(PacsError, match="refused to contact 127.0.0.1: 127.0.0.1 is a loopback"):
            PacsClient(Endpoint(f"http://127.0.0.1:{port}/dicom-web")).test()
        assert server.requests == []
        # Allowed explicitly (as in development), the same server answers.
        allowed = PacsClient(Endpoint(f"http://localhost:{port}/dicom-web", allow_loopback=True))
        assert [hit.study_uid for hit in allowed.search_studies(patient_id="P1")] == ["1.2.3"]
        assert len(server.requests) == 1
    finally:
        server.close()


def test_the_client_refuses_the_metadata_address_without_retrying():
    sleeps = []
    client = PacsClient(Endpoint("http://169.254.169.254/dicom-web", max_retries=3), sleep=sleeps.append)
    with pytest.raises(PacsError, match="refused to contact 169.254.169.254: 169.254.169.254 is a cloud metadata"):
        client.test()
    assert sleeps == []  # a refusal is final, not a transient failure


@pytest.mark.parametrize("address, allowed", [
    ("10.0.0.1", True), ("172.31.255.1", True), ("192.168.1.1", True), ("8.8.8.8", True), ("fd00::1", True),
    ("100.64.0.1", True), ("127.0.0.1", False), ("::1", False), ("169.254.0.1", False), ("fe80::1%eth0", False),
    ("ff02::1", False), ("::", False), ("255.255.255.255", False), ("240.0.0.1", False), ("168.63.129.16", False),
])
def test_address_rules(address, allowed):
    assert (address_refusal(address, allow_loopback=False) == "") is allowed

"""The DICOMweb client against real HTTP servers on loopback: requests only to the configured host, no
redirects, credentials never sent elsewhere, bounded retries with backoff on timeouts, 5xx and 429."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from studies.pacs.client import Endpoint, PacsClient, PacsError

STUDY = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00080020": {"vr": "DA", "Value": ["20240101"]}}
SECRET = "s3cr3t-token-value"


class Recorder:
    """A loopback HTTP server answering from a script of (status, headers, body, delay_s) per request."""

    def __init__(self, script=None):
        self.script = list(script or [])
        self.requests = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.requests.append({"path": self.path, "headers": dict(self.headers)})
                status, headers, body, delay = (recorder.script.pop(0) if recorder.script
                                                else (200, {}, json.dumps([STUDY]), 0))
                if delay:
                    threading.Event().wait(delay)
                self.send_response(status)
                headers = {"Content-Type": "application/dicom+json", **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                data = body.encode() if isinstance(body, str) else body
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers():
    made = []

    def make(script=None):
        server = Recorder(script)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def client_for(server, sleeps=None, **kwargs):
    endpoint = Endpoint(f"{server.url}/dicom-web", **{"auth": "bearer", "secret": SECRET, **kwargs})
    return PacsClient(endpoint, sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_bearer_token_goes_to_the_configured_host(servers):
    pacs = servers()
    hits = client_for(pacs).search_studies(patient_id="P1")
    assert [h.study_uid for h in hits] == ["1.2.3"]
    assert pacs.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert "PatientID=P1" in pacs.requests[0]["path"]


def test_redirect_is_not_followed_and_the_other_host_sees_nothing(servers):
    elsewhere = servers()
    pacs = servers([(302, {"Location": f"{elsewhere.url}/steal"}, "", 0)])
    with pytest.raises(PacsError) as info:
        client_for(pacs).search_studies()
    assert "302 redirecting to" in str(info.value) and "redirects are not followed" in str(info.value)
    assert elsewhere.requests == []  # neither the request nor the token reached the other server
    assert len(pacs.requests) == 1  # a redirect is not retried either
    assert SECRET not in str(info.value)


def test_other_hosts_are_refused_before_sending(servers):
    """A BulkDataURI or RetrieveURL pointing elsewhere (another port is another origin) is never fetched."""
    elsewhere = servers()
    client = client_for(servers())
    with pytest.raises(PacsError, match="refused request to"):
        client.session.get(f"{elsewhere.url}/bulk/1", timeout=2)
    assert elsewhere.requests == []


def test_5xx_and_429_are_retried_with_backoff_then_succeed(servers):
    pacs = servers([(503, {}, "busy", 0), (429, {"Retry-After": "2"}, "slow down", 0), (500, {}, "oops", 0)])
    sleeps = []
    hits = client_for(pacs, sleeps, max_retries=3, backoff_s=0.5).search_studies()
    assert [h.study_uid for h in hits] == ["1.2.3"] and len(pacs.requests) == 4
    # Exponential backoff 0.5, 1, 2 s; the 429's Retry-After (2 s) lengthens the second wait.
    assert sleeps == [0.5, 2.0, 2.0]


def test_retries_are_bounded_then_a_clear_failure(servers):
    pacs = servers([(503, {}, "busy", 0)] * 10)
    sleeps = []
    with pytest.raises(PacsError) as info:
        client_for(pacs, sleeps, max_retries=2).search_studies()
    assert len(pacs.requests) == 3 and len(sleeps) == 2
    assert "failed after 3 attempt(s): HTTP 503" in str(info.value)


def test_client_errors_are_not_retried(servers):
    pacs = servers([(401, {}, "no", 0)])
    with pytest.raises(PacsError) as info:
        client_for(pacs, max_retries=3).search_studies()
    assert len(pacs.requests) == 1 and "answered HTTP 401" in str(info.value)
    assert SECRET not in str(info.value)


def test_timeouts_are_retried_then_fail(servers):
    pacs = servers([(200, {}, json.dumps([STUDY]), 1.0)] * 3)
    with pytest.raises(PacsError) as info:
        client_for(pacs, read_timeout_s=0.2, max_retries=1).search_studies()
    assert "failed after 2 attempt(s): no answer within 0.2 s (timeout)" in str(info.value)


def test_unreachable_pacs_fails_clearly():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    client = PacsClient(Endpoint(f"http://127.0.0.1:{port}/dicom-web", max_retries=1), sleep=lambda s: None)
    with pytest.raises(PacsError) as info:
        client.test()
    assert "failed after 2 attempt(s): connection failed ([Errno 111] Connection refused)" in str(info.value)


def test_secret_is_not_in_reprs():
    endpoint = Endpoint("http://127.0.0.1:1/dicom-web", auth="basic", username="u", secret=SECRET)
    client = PacsClient(endpoint)
    assert SECRET not in repr(endpoint) and SECRET not in repr(client) and SECRET not in repr(client.session.auth)


def test_credentials_in_the_url_are_refused():
    with pytest.raises(PacsError, match="not in the URL"):
        PacsClient(Endpoint("http://user:pw@127.0.0.1:1/dicom-web"))

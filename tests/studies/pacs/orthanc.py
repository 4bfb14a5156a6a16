"""Orthanc with its DICOMweb plugin as a test/benchmark service, and a throttling TCP proxy (no Django: the
benchmarks use it too)."""

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """One Orthanc process; ``url`` is its DICOMweb root. ``kill()`` then ``start()`` keeps the storage."""

    def __init__(self, workdir: Path, users=None):
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.users = users or {}
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc = None
        self.log_path = workdir / "orthanc.log"
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps({
            "Name": "bmdsite-test",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "BMDTEST",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "HttpCompressionEnabled": False,
            "StorageCompression": False,
            "SaveJobs": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full",
                         "SeriesMetadata": "Full"},
        }))

    @property
    def root(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self):
        return f"{self.root}/dicom-web"

    @property
    def auth(self):
        return next(iter(self.users.items()), None)

    def start(self, timeout=30.0):
        import requests

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.root}/system", auth=self.auth, timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s: {self.log_path.read_text()[-2000:]}")

    def kill(self):
        """SIGKILL: the PACS stops dead, mid-answer."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def stow(self, paths):
        """STOW-RS the files as they are (bytes unchanged). Returns (stored SOP UIDs, failed SOP UIDs)."""
        import requests

        boundary = uuid.uuid4().hex
        body = bytearray()
        for path in paths:
            body += (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
            body += Path(path).read_bytes()
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        response = requests.post(f"{self.url}/studies", data=bytes(body), auth=self.auth, timeout=120, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        # Orthanc answers 400 when some instances were refused, with the usual STOW-RS sequences.
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}

        def uids(tag):
            return [item.get("00081155", {}).get("Value", [""])[0] for item in answer.get(tag, {}).get("Value", [])]

        if response.status_code not in (200, 202, 409) and "00081198" not in answer:
            raise RuntimeError(f"STOW-RS failed: HTTP {response.status_code} {response.text[:300]}")
        return uids("00081199"), uids("00081198")

    def count_instances(self):
        import requests

        return requests.get(f"{self.root}/statistics", auth=self.auth, timeout=5).json()["CountInstances"]


class ThrottledProxy:
    """TCP proxy on loopback that passes answers on at ``rate`` bytes/s, so a test can stop the PACS behind
    it in the middle of a transfer. When the upstream connection fails or ends, the client's is closed."""

    def __init__(self, upstream_port, rate=8e6, chunk=64 * 1024):
        import threading

        self.upstream_port = upstream_port
        self.rate = rate
        self.chunk = chunk
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        import threading

        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            client.close()
            return
        # The answer may be long: no timeout on reads, the PACS decides when it ends.
        upstream.settimeout(None)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)

        def forward_requests():
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward_requests, daemon=True).start()
        try:
            while data := upstream.recv(self.chunk):
                client.sendall(data)
                time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                # shutdown first: close() alone does not send FIN while another thread blocks in recv().
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.closed = True
        self.listener.close()

"""DICOMweb client for one PACS: QIDO-RS searches and WADO-RS retrieval, fenced to the configured host.

Safety rules (SPEC section 3.2, issue "Images in"):

- every request goes to the configured scheme, host and port only: a request for any other origin (a
  redirect target, a BulkDataURI or RetrieveURL on another host) is refused before anything is sent;
- redirects are never followed (``allow_redirects=False`` is forced); a 3xx answer is a clear error;
- credentials are attached by :class:`HostBoundAuth`, which checks the origin of each request itself;
- ``trust_env`` is off, so no proxy from the environment and no ``.netrc`` credentials are used;
- the address is vetted when the connection is made (:func:`vetted_addresses`): the host name is resolved,
  every address it gives must be allowed (never link-local, cloud metadata, multicast, unspecified or
  reserved; loopback only where ``PACS_ALLOW_LOOPBACK`` is on; private networks are fine, hospital PACS live
  there), and the socket connects to the vetted address itself, so a second DNS answer (rebinding) cannot
  send the request elsewhere. The connection form runs the same check when the URL is saved;
- the secret appears in no message, repr or log line of this module.

Transient failures (timeouts, refused or dropped connections, a multipart answer cut short, HTTP 5xx and
429) are retried ``max_retries`` times with exponential backoff (``Retry-After`` honoured up to
:data:`MAX_RETRY_AFTER_S`), then :class:`PacsError` says what failed and why. Other 4xx answers fail at once.

QIDO-RS goes through dicomweb-client. WADO-RS series retrieval streams the multipart answer straight to
one file per instance (``transfer-syntax=*``: the PACS sends what it stores, no lossy transcoding), so a
series is never held in memory; dicomweb-client's ``iter_series`` would parse each part into a pydicom
dataset that we would only write back to disk.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from .uids import is_route_uid

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 30.0
CHUNK_BYTES = 1 << 20
RETRIABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class PacsError(Exception):
    """A PACS request failed (after retries for transient failures) or was refused by our own rules."""


class IncompleteResponse(PacsError):
    """The multipart answer ended before its closing boundary (connection dropped, PACS stopped)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach a DICOMweb service; plain values, so workers and commands can build one.

    ``secret`` is the password (basic) or token (bearer); it is left out of ``repr``.
    """

    base_url: str
    auth: str = "none"
    username: str = ""
    secret: str = field(default="", repr=False)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 0.5
    name: str = ""
    # Whether a loopback PACS may be contacted; None: the PACS_ALLOW_LOOPBACK setting.
    allow_loopback: bool | None = None

    @classmethod
    def from_connection(cls, connection, **overrides) -> Endpoint:
        """From a :class:`studies.pacs.models.PacsConnection` (or anything with the same attributes)."""
        values = dict(base_url=connection.base_url, auth=connection.auth, username=connection.username,
                      secret=connection.secret, connect_timeout_s=connection.connect_timeout_s,
                      read_timeout_s=connection.read_timeout_s, max_retries=connection.max_retries,
                      name=connection.name)
        values.update(overrides)
        return cls(**values)

    @property
    def origin(self) -> tuple[str, str, int]:
        return _origin(self.base_url)

    @property
    def label(self) -> str:
        """How messages name this PACS: its name, or its URL without any user info."""
        scheme, host, port = self.origin
        return self.name or f"{scheme}://{host}:{port}{urlsplit(self.base_url).path}"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise PacsError(f"not an http(s) URL: {_safe_url(url)}")
    if not parts.hostname:
        raise PacsError(f"URL without a host: {_safe_url(url)}")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname.lower(), port


def _safe_url(url: str) -> str:
    """The URL without user info (``user:password@``), for messages."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=netloc, query="").geturl()


def check_base_url(url: str) -> str:
    """Validate a DICOMweb root URL (http/https, a host, no credentials in it); returns it without a trailing /."""
    parts = urlsplit(url)
    _origin(url)
    if parts.username or parts.password:
        raise PacsError("put credentials in the connection's user name and secret, not in the URL")
    if parts.query or parts.fragment:
        raise PacsError("the DICOMweb root URL takes no query string or fragment")
    return url.rstrip("/")


# -- where a PACS may be --------------------------------------------------------------------------------
# Cloud instance-metadata services (AWS, its ECS task and IPv6 endpoints, GCP, Azure, Alibaba, Oracle): a
# request there from a server hands its credentials to whoever chose the URL. Most are link-local (refused
# anyway); the others sit in private, shared or public ranges and are listed here.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192"))
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})


def _allow_loopback_setting() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "PACS_ALLOW_LOOPBACK", False)) if settings.configured else False


def address_refusal(address: str, *, allow_loopback: bool) -> str:
    """Why a PACS may not be at ``address`` (an IP literal), or "" when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) says nothing more
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 reaches the IPv4 address
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address (where cloud metadata services answer)"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_loopback:
        return "" if allow_loopback else f"{ip} is a loopback address (allowed only with PACS_ALLOW_LOOPBACK)"
    if ip.is_reserved or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return f"{ip} is a reserved address"
    return ""


def vetted_addresses(host: str, port: int, *, allow_loopback: bool) -> list[str]:
    """The addresses of ``host`` to connect to, every one of them allowed for a PACS.

    Raises
    ------
    PacsError
        When the name is a metadata service's or any address it resolves to is refused (a name that answers
        with an allowed and a refused address is not trusted with either).
    socket.gaierror
        When the name does not resolve.
    """
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        raise PacsError(f"refused to contact {name}: a cloud metadata service, not a PACS")
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        reason = address_refusal(address, allow_loopback=allow_loopback)
        if reason:
            shown = name if name == address else f"{name} ({address})"
            raise PacsError(f"refused to contact {shown}: {reason}; a PACS is never there")
    return addresses


def check_pacs_address(url: str, *, allow_loopback: bool | None = None) -> None:
    """Resolve the host of a DICOMweb URL now and refuse it as the client would (for the connection form)."""
    scheme, host, port = _origin(url)
    if allow_loopback is None:
        allow_loopback = _allow_loopback_setting()
    try:
        vetted_addresses(host, port, allow_loopback=allow_loopback)
    except socket.gaierror as exc:
        raise PacsError(f"the host name {host} does not resolve from this server ({exc.strerror})") from None


def _vetting_adapter(allow_loopback: bool):
    """A requests adapter whose connections go only to vetted addresses (looked up once, at connect time)."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import NameResolutionError

    class Vetted:
        def _new_conn(self):
            name = self._dns_host
            try:
                addresses = vetted_addresses(name, self.port, allow_loopback=allow_loopback)
            except socket.gaierror as exc:
                raise NameResolutionError(self.host, self, exc) from exc
            failure = None
            for address in addresses:
                # Connect to the address that was checked, not to the name: a second lookup could answer
                # with another one. Host header and TLS (SNI, certificate) still use the name.
                self._dns_host = address
                try:
                    return super()._new_conn()
                except Exception as exc:  # noqa: BLE001 (urllib3's own connect errors; the last one is raised)
                    failure = exc
                finally:
                    self._dns_host = name
            raise failure

    class VettedHTTPConnection(Vetted, HTTPConnection):
        pass

    class VettedHTTPSConnection(Vetted, HTTPSConnection):
        pass

    class VettedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = VettedHTTPConnection

    class VettedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = VettedHTTPSConnection

    class VettingAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": VettedHTTPConnectionPool,
                                                       "https": VettedHTTPSConnectionPool}

    return VettingAdapter()


# -- the fenced session ---------------------------------------------------------------------------------
def _import_requests():
    import requests

    return requests


class HostBoundAuth:
    """Adds the Authorization header only to requests for the endpoint's own origin (else refuses)."""

    def __init__(self, endpoint: Endpoint):
        self._endpoint = endpoint

    def __call__(self, request):
        endpoint = self._endpoint
        if _origin(request.url) != endpoint.origin:
            raise PacsError(f"refused to send credentials for {endpoint.label} to {_safe_url(request.url)}")
        if endpoint.auth == "basic":
            from requests.auth import _basic_auth_str

            request.headers["Authorization"] = _basic_auth_str(endpoint.username, endpoint.secret)
        elif endpoint.auth == "bearer":
            request.headers["Authorization"] = f"Bearer {endpoint.secret}"
        return request

    def __repr__(self):
        return f"<HostBoundAuth {self._endpoint.auth} for {self._endpoint.label}>"


def make_session(endpoint: Endpoint):
    """A ``requests.Session`` that only talks to ``endpoint``'s origin and never follows redirects."""
    requests = _import_requests()

    class FencedSession(requests.Session):
        def request(self, method, url, *args, **kwargs):
            if _origin(url) != endpoint.origin:
                raise PacsError(f"refused request to {_safe_url(url)}: {endpoint.label} is configured for "
                                f"{endpoint.origin[0]}://{endpoint.origin[1]}:{endpoint.origin[2]} only")
            kwargs["allow_redirects"] = False
            response = super().request(method, url, *args, **kwargs)
            if 300 <= response.status_code < 400:
                location = response.headers.get("Location", "?")
                response.close()
                raise PacsError(f"{endpoint.label} answered {response.status_code} redirecting to "
                                f"{_safe_url(location)}; redirects are not followed")
            return response

        def rebuild_auth(self, prepared_request, response):  # belt and braces: never carry auth anywhere
            prepared_request.headers.pop("Authorization", None)

    session = FencedSession()
    session.trust_env = False  # no proxies from the environment, no .netrc credentials
    allow_loopback = endpoint.allow_loopback
    if allow_loopback is None:
        allow_loopback = _allow_loopback_setting()
    adapter = _vetting_adapter(allow_loopback)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if endpoint.auth not in ("none", "", None):
        if endpoint.auth not in ("basic", "bearer"):
            raise PacsError(f"unknown authentication {endpoint.auth!r}")
        session.auth = HostBoundAuth(endpoint)
    return session


# -- summaries of QIDO answers ---------------------------------------------------------------------------
def _value(item: dict, tag: str, default=None):
    values = (item.get(tag) or {}).get("Value")
    if not values:
        return default
    value = values[0]
    if isinstance(value, dict):  # PN as {"Alphabetic": ...}
        return value.get("Alphabetic", default)
    return value


def _values(item: dict, tag: str) -> list:
    return list((item.get(tag) or {}).get("Value") or [])


@dataclass
class StudyHit:
    study_uid: str
    study_date: str
    description: str
    patient_id: str
    accession: str
    modalities: list
    n_series: int | None


@dataclass
class SeriesHit:
    study_uid: str
    series_uid: str
    modality: str
    description: str
    number: int | None
    n_instances: int | None


# -- the client -------------------------------------------------------------------------------------------
class PacsClient:
    """QIDO-RS and WADO-RS for one :class:`Endpoint`.

    Parameters
    ----------
    endpoint : Endpoint
    sleep : callable, optional
        Backoff sleep (seconds); tests of the retry logic may pass a recorder.
    """

    def __init__(self, endpoint: Endpoint, sleep: Callable[[float], None] = time.sleep):
        check_base_url(endpoint.base_url)
        self.endpoint = endpoint
        self._sleep = sleep
        self.session = make_session(endpoint)
        self.base_url = endpoint.base_url.rstrip("/")
        self._dicomweb = None

    def __repr__(self):
        return f"<PacsClient {self.endpoint.label}>"

    @property
    def timeout(self):
        return (self.endpoint.connect_timeout_s, self.endpoint.read_timeout_s)

    @property
    def dicomweb(self):
        if self._dicomweb is None:
            from dicomweb_client.api import DICOMwebClient

            client = DICOMwebClient(url=self.base_url, session=self.session, timeout=self.timeout)
            client.set_http_retry_params(retry=False)  # our own bounded retries cover 5xx and timeouts too
            self._dicomweb = client
        return self._dicomweb

    # -- retries ----------------------------------------------------------------------------------------
    def _call(self, what: str, func: Callable, cleanup: Callable[[], None] | None = None):
        """Run ``func`` with bounded retries on transient failures; PacsError with the reason otherwise."""
        requests = _import_requests()
        attempts = self.endpoint.max_retries + 1
        last, first = "no attempt made", ""
        for attempt in range(attempts):
            wait = self.endpoint.backoff_s * (2 ** attempt)
            try:
                return func()
            except IncompleteResponse as exc:
                last = str(exc)
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status not in RETRIABLE_STATUS:
                    raise PacsError(f"{what}: {self.endpoint.label} answered HTTP {status} "
                                    f"{_reason(exc.response)}") from None
                last = f"HTTP {status} {_reason(exc.response)}"
                retry_after = _retry_after(exc.response)
                if retry_after is not None:
                    wait = min(max(wait, retry_after), MAX_RETRY_AFTER_S)
            except requests.Timeout:
                last = f"no answer within {self.endpoint.read_timeout_s:g} s (timeout)"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                last = f"connection failed ({_short(exc)})"
            if cleanup is not None:
                cleanup()
            if attempt + 1 < attempts:
                log.warning("%s: %s failed (%s); retry %d of %d in %.1f s", what, self.endpoint.label, last,
                            attempt + 1, attempts - 1, wait)
                self._sleep(wait)
            first = first or last
        also = f" (first attempt: {first})" if first and first != last else ""
        raise PacsError(f"{what}: {self.endpoint.label} failed after {attempts} attempt(s): {last}{also}")

    # -- QIDO-RS ----------------------------------------------------------------------------------------
    def test(self) -> str:
        """A QIDO-RS study search (one result); returns a one-line description of the answer."""
        found = self._call("test connection", lambda: self.dicomweb.search_for_studies(limit=1))
        return f"QIDO-RS answered at {self.endpoint.label} ({len(found)} study shown of the first page)"

    def search_studies(self, *, patient_id: str = "", date_from=None, date_to=None, modality: str = "",
                       limit: int = 100) -> list[StudyHit]:
        """Studies by PatientID, StudyDate range (``datetime.date`` or None) and ModalitiesInStudy."""
        filters = {}
        if patient_id:
            filters["PatientID"] = patient_id
        if date_from or date_to:
            filters["StudyDate"] = f"{_dicom_date(date_from)}-{_dicom_date(date_to)}"
        if modality:
            filters["ModalitiesInStudy"] = modality
        fields = ["StudyDate", "StudyDescription", "PatientID", "AccessionNumber", "ModalitiesInStudy",
                  "NumberOfStudyRelatedSeries"]
        found = self._call("study search", lambda: self.dicomweb.search_for_studies(
            search_filters=filters, fields=fields, limit=limit))
        return [StudyHit(study_uid=_value(s, "0020000D", ""), study_date=_value(s, "00080020", ""),
                         description=_value(s, "00081030", ""), patient_id=_value(s, "00100020", ""),
                         accession=_value(s, "00080050", ""), modalities=_values(s, "00080061"),
                         n_series=_int(_value(s, "00201206"))) for s in found]

    def search_series(self, study_uid: str, *, modality: str = "") -> list[SeriesHit]:
        filters = {"Modality": modality} if modality else {}
        found = self._call(f"series search in study {study_uid}", lambda: self.dicomweb.search_for_series(
            study_instance_uid=study_uid, search_filters=filters,
            fields=["SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances", "Modality"]))
        hits = [SeriesHit(study_uid=_value(s, "0020000D", study_uid), series_uid=_value(s, "0020000E", ""),
                          modality=_value(s, "00080060", ""), description=_value(s, "0008103E", ""),
                          number=_int(_value(s, "00200011")), n_instances=_int(_value(s, "00201209")))
                for s in found]
        for hit in hits:
            # The UID goes into the next request's URL: only digits and dots may.
            if not is_route_uid(hit.series_uid):
                raise PacsError(f"series search in study {study_uid}: {self.endpoint.label} answered a series "
                                f"whose SeriesInstanceUID {hit.series_uid!r} is not a DICOM UID")
        return sorted(hits, key=lambda h: (h.number is None, h.number or 0, h.series_uid))

    def series_metadata(self, study_uid: str, series_uid: str) -> list[dict]:
        """WADO-RS metadata (DICOM JSON, one dict per instance, no bulk data) of a series."""
        return self._call(f"metadata of series {series_uid}", lambda: self.dicomweb.retrieve_series_metadata(
            study_instance_uid=study_uid, series_instance_uid=series_uid))

    # -- WADO-RS ----------------------------------------------------------------------------------------
    def series_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.base_url}/studies/{quote(study_uid, safe='')}/series/{quote(series_uid, safe='')}"

    def retrieve_series(self, study_uid: str, series_uid: str, folder, *,
                        progress: Callable[[int, int], None] | None = None) -> list[Path]:
        """Download every instance of a series into ``folder`` (one ``.dcm`` per instance).

        The multipart answer is streamed: each part goes straight to its file, so memory stays at one chunk
        (:data:`CHUNK_BYTES`) whatever the series size. A transfer cut short raises
        :class:`IncompleteResponse` inside, is retried from scratch (the folder emptied), and after
        ``max_retries`` becomes :class:`PacsError`.

        Parameters
        ----------
        folder : str or Path
            Created if missing; must be empty or hold only files of a previous attempt (they are removed).
        progress : callable(n_instances, n_bytes), optional
            Called after each instance written.

        Returns
        -------
        list of Path
            The instance files, in the order the PACS sent them.
        """
        folder = Path(folder)
        url = self.series_url(study_uid, series_uid)

        def clear():
            if folder.exists():
                shutil.rmtree(folder)

        def attempt():
            clear()
            folder.mkdir(parents=True)
            with self.session.get(url, headers={"Accept": WADO_ACCEPT}, stream=True,
                                  timeout=self.timeout) as response:
                response.raise_for_status()
                return write_multipart(response, folder, progress=progress, what=f"series {series_uid}")

        paths = self._call(f"retrieve series {series_uid}", attempt, cleanup=clear)
        if not paths:
            raise PacsError(f"retrieve series {series_uid}: {self.endpoint.label} sent no instances "
                            "(unknown series?)")
        return paths


# -- multipart/related streaming ----------------------------------------------------------------------------
def _boundary(content_type: str) -> bytes:
    media_type, *params = [p.strip() for p in content_type.split(";")]
    if media_type.lower() != "multipart/related":
        raise PacsError(f"expected a multipart/related answer, got {media_type or 'nothing'}")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "boundary":
            return value.strip().strip('"').encode("ascii")
    raise PacsError("multipart answer without a boundary parameter")


class _Chunks:
    """The response body as a sequence of immutable chunks read at a position: parts are cut out as
    zero-copy memoryviews, only part headers (small) are copied."""

    def __init__(self, iterator):
        self._iterator = iterator
        self.chunk = b""
        self.pos = 0

    def fill(self) -> bool:
        """Make sure unread bytes are available; False at the end of the body."""
        while self.pos >= len(self.chunk):
            chunk = next(self._iterator, None)
            if chunk is None:
                return False
            self.chunk, self.pos = chunk, 0
        return True

    def take(self, n: int):
        """Up to ``n`` bytes as a memoryview (possibly fewer: never crosses a chunk), None at the end."""
        if not self.fill():
            return None
        view = memoryview(self.chunk)[self.pos:self.pos + n]
        self.pos += len(view)
        return view

    def exact(self, n: int):
        """Exactly ``n`` bytes (a copy; for short delimiters), or None if the body ends first."""
        out = bytearray()
        while len(out) < n:
            view = self.take(n - len(out))
            if view is None:
                return None
            out += view
        return bytes(out)

    def until(self, marker: bytes, limit: int):
        """The bytes before ``marker`` (consumed too), None if the body ends first; ValueError past ``limit``."""
        if not self.fill():
            return None
        index = self.chunk.find(marker, self.pos, self.pos + limit + len(marker))
        if index >= 0:
            out = self.chunk[self.pos:index]
            self.pos = index + len(marker)
            return out
        pending = bytearray(self.chunk[self.pos:])
        self.pos = len(self.chunk)
        while True:
            if len(pending) > limit + len(marker):
                raise ValueError(f"no {marker[:20]!r} within {limit} bytes")
            if not self.fill():
                return None
            # Search the pending tail plus the head of the new chunk only: no copy of the whole chunk.
            head = self.chunk[self.pos:self.pos + limit + len(marker)]
            combined = bytes(pending) + head
            index = combined.find(marker)
            if index >= 0:
                self.pos += index + len(marker) - len(pending)
                return combined[:index]
            pending += head
            self.pos += len(head)


class _FileWriter:
    """Writes on a background thread, so that receiving (socket reads) and writing (page cache copies) overlap
    on two cores. The queue is bounded: at most ``depth`` chunks wait in memory."""

    def __init__(self, depth=32):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=depth)
        self.error = None
        self._thread = threading.Thread(target=self._run, name="wado-writer", daemon=True)
        self._thread.start()

    def _run(self):
        fh = None
        while True:
            op, value = self._queue.get()
            if op == "stop":
                break
            if self.error is not None:
                continue  # drain the queue after a failure
            try:
                if op == "open":
                    fh = open(value, "wb")
                elif op == "write":
                    fh.write(value)
                elif op == "close":
                    fh.close()
                    fh = None
            except Exception as exc:  # noqa: BLE001 (reported to the reading thread, which raises)
                self.error = exc
        if fh is not None:
            fh.close()

    def put(self, op, value=None):
        if self.error is not None:
            raise PacsError(f"cannot write the retrieved instances: {self.error}")
        self._queue.put((op, value))

    def finish(self, check=True):
        self._queue.put(("stop", None))
        self._thread.join()
        if check and self.error is not None:
            raise PacsError(f"cannot write the retrieved instances: {self.error}")


def write_multipart(response, folder: Path, *, progress=None, what="answer") -> list[Path]:
    """Stream the parts of a ``multipart/related`` response into ``folder/00000.dcm``, ``00001.dcm``, ...

    Parts with a Content-Length are cut by length (the pixel data is never scanned for the boundary, nor
    copied in Python: the chunks read from the socket go to the writer thread as they are); parts without one
    are cut at the next delimiter. The closing delimiter must arrive: anything less is
    :class:`IncompleteResponse` (the PACS stopped or the connection dropped mid-series).
    """
    delimiter = b"--" + _boundary(response.headers.get("Content-Type", ""))
    marker = b"\r\n" + delimiter
    body = _Chunks(response.iter_content(chunk_size=CHUNK_BYTES))
    paths: list[Path] = []
    total = 0
    writer = _FileWriter()

    def incomplete(detail: str):
        return IncompleteResponse(f"the multipart answer for {what} ended {detail} ({len(paths)} complete "
                                  "instance(s) received; connection dropped or PACS stopped)")

    try:
        try:
            if body.until(delimiter, limit=1 << 20) is None:
                raise incomplete("before the first part")
        except ValueError:
            raise PacsError(f"{what}: no multipart boundary at the start of the answer") from None
        while True:
            # After a delimiter: "--" closes the message; otherwise (padding and) CRLF, the part headers and
            # an empty line. Without headers the CRLF CRLF follows the delimiter directly.
            lead = body.exact(2)
            if lead is None:
                raise incomplete("without its closing boundary")
            if lead == b"--":
                break
            try:
                block = body.until(b"\r\n\r\n", limit=64 * 1024)
            except ValueError:
                raise PacsError(f"{what}: malformed multipart answer (part headers too long)") from None
            if block is None:
                raise incomplete("inside part headers")
            headers = _part_headers(lead + block)
            number = len(paths) + 1
            path = folder / f"{len(paths):05d}.dcm"
            writer.put("open", path)
            length = headers.get("content-length", "")
            size = 0
            if length.isdigit():
                remaining = int(length)
                while remaining:
                    view = body.take(remaining)
                    if view is None:
                        raise incomplete(f"inside instance {number}")
                    writer.put("write", view)
                    remaining -= len(view)
                    size += len(view)
                tail = body.exact(len(marker))
                if tail is None:
                    raise incomplete(f"after instance {number}")
                if tail != marker:
                    raise PacsError(f"{what}: malformed multipart answer (part {number} does not end where its "
                                    "Content-Length says)")
            else:
                size = _copy_until(body, marker, writer)
                if size is None:
                    raise incomplete(f"inside instance {number}")
            writer.put("close")
            paths.append(path)
            total += size
            if progress is not None:
                progress(len(paths), total)
    except BaseException:
        writer.finish(check=False)  # the reading error is the one to report
        raise
    writer.finish()
    return paths


def _copy_until(body: _Chunks, marker: bytes, writer: _FileWriter):
    """Pass everything before ``marker`` to the writer (the slow path, for parts without Content-Length)."""
    size = 0
    keep = len(marker) - 1  # a delimiter may straddle two chunks
    while True:
        if not body.fill():
            return None
        index = body.chunk.find(marker, body.pos)
        if index >= 0:
            writer.put("write", bytes(body.chunk[body.pos:index]))
            size += index - body.pos
            body.pos = index + len(marker)
            return size
        safe = len(body.chunk) - keep
        if safe > body.pos:
            writer.put("write", bytes(body.chunk[body.pos:safe]))
            size += safe - body.pos
        tail = body.chunk[max(body.pos, safe):]
        chunk = next(body._iterator, None)
        if chunk is None:
            return None
        body.chunk, body.pos = tail + chunk, 0


def _part_headers(block: bytes) -> dict:
    headers = {}
    for line in block.split(b"\r\n"):
        if not line.strip():
            continue
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return headers


def _dicom_date(value) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _reason(response) -> str:
    if response is None:
        return ""
    text = (response.reason or "").strip()
    return f"({text})" if text else ""


def _retry_after(response):
    if response is None:
        return None
    value = response.headers.get("Retry-After", "")
    return float(value) if re.fullmatch(r"\d+(\.\d+)?", value.strip()) else None


def _short(exc) -> str:
    """The useful clause of a requests/urllib3 error ("[Errno 111] Connection refused", "Read timed out")."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    if match:
        return match.group(0).strip()
    for clause in ("Read timed out", "Connection aborted", "RemoteDisconnected", "Connection reset by peer",
                   "Response ended prematurely", "IncompleteRead"):
        if clause in text:
            return clause
    return text[:200]

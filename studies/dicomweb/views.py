"""The site's DICOMweb endpoint per project (QIDO-RS and WADO-RS, PS3.18), read-only.

Authentication is a personal API token (``Authorization: Bearer ...``) or the browser session; without
either the answer is 401. A user who is not a member of the project gets 404, as on the pages. Every
response is built from the project's stored series by :mod:`.service`.
"""

import functools
import re

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from studies.access import get_project_for_user
from studies.registry import log_access

from . import service
from .tokens import create_token, revoke_token, user_for_token

DICOM_JSON = "application/dicom+json"


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="what the token is for")


def _unauthorized(reason):
    response = JsonResponse({"error": reason}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="bmdsite DICOMweb"'
    return response


def dicomweb_view(view):
    """Bearer token or session -> user -> project (404 for non-members) -> the view."""

    @functools.wraps(view)
    @require_GET
    def wrapper(request, project_id, **kwargs):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                return _unauthorized("only Bearer tokens are accepted")
            user = user_for_token(token.strip())
            if user is None:
                return _unauthorized("unknown or revoked token")
            request.user = user
        elif not request.user.is_authenticated:
            return _unauthorized("authentication required: a session or an API token")
        project = get_project_for_user(request, project_id)
        try:
            return view(request, project, **kwargs)
        except service.NotFound as exc:
            raise Http404(str(exc)) from None

    return wrapper


def _json(data):
    return HttpResponse(service.dumps(data), content_type=DICOM_JSON)


def _query(request):
    return {key: request.GET.get(key) for key in request.GET}


@dicomweb_view
def search_studies(request, project):
    return _json(service.search_studies(project, _query(request)))


@dicomweb_view
def search_series(request, project, study=None):
    return _json(service.search_series(project, _query(request), study_uid=study))


@dicomweb_view
def search_instances(request, project, study, series):
    return _json(service.search_instances(project, study, series, _query(request)))


@dicomweb_view
def series_metadata(request, project, study, series):
    base = request.build_absolute_uri(request.path.rsplit("/metadata", 1)[0])
    return _json(service.series_metadata(project, study, series, base_url=base))


@dicomweb_view
def instance_metadata(request, project, study, series, instance):
    base = request.build_absolute_uri(request.path.rsplit("/instances/", 1)[0])
    return _json(service.series_metadata(project, study, series, base_url=base, sop_uid=instance))


@dicomweb_view
def retrieve_series(request, project, study, series):
    """The series' instances (application/dicom), or with ``Accept: multipart/related;
    type="application/octet-stream"`` its bulk data: every frame in one response, each part named by its
    Content-Location (what the case viewer loads, one request instead of one per slice)."""
    stored, instances = service.series_instances(project, study, series)
    log_access(request.user, project, "dicomweb.retrieve_series", series)
    boundary = service.new_boundary()
    if service.wants_bulk_data(request.headers.get("Accept", "")):
        frames_url = request.build_absolute_uri(request.path) + "/instances/{sop}/frames/1"
        return StreamingHttpResponse(
            service.multipart_series_frames(instances, boundary, frames_url),
            content_type=service.multipart_type("application/octet-stream", boundary,
                                                transfer_syntax=service.EXPLICIT_VR_LITTLE_ENDIAN))
    return StreamingHttpResponse(
        service.multipart_instances(instances, range(len(instances)), boundary),
        content_type=service.multipart_type("application/dicom", boundary))


@dicomweb_view
def retrieve_instance(request, project, study, series, instance):
    _, instances = service.series_instances(project, study, series)
    k = service.slice_index(instances, instance)
    boundary = service.new_boundary()
    body = b"".join(service.multipart_instances(instances, [k], boundary))
    return HttpResponse(body, content_type=service.multipart_type("application/dicom", boundary))


@dicomweb_view
def retrieve_frames(request, project, study, series, instance, frames):
    _, instances = service.series_instances(project, study, series)
    k = service.slice_index(instances, instance)
    numbers = service.frame_numbers(frames)
    boundary = service.new_boundary()
    body = service.multipart_frames(instances, k, numbers, boundary)
    return HttpResponse(body, content_type=service.multipart_type(
        "application/octet-stream", boundary, transfer_syntax=service.EXPLICIT_VR_LITTLE_ENDIAN))


# -- a site extension for the case viewer (not part of PS3.18) ------------------------------------------
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dicomweb_view
def series_voxels(request, project, study, series):
    """The series' stored pixel values as one little-endian int16 array, shape (slices, rows, columns) in
    instance order (InstanceNumber - 1), the same values WADO-RS serves frame by frame; HU = value *
    X-Rescale-Slope + X-Rescale-Intercept. One byte range (``Range: bytes=a-b``) per request, so a viewer
    fetches a series in a few parallel requests and draws each part as it arrives, with nothing to decode."""
    _, instances = service.series_instances(project, study, series)
    data = service.voxel_bytes(instances)
    total = len(data)
    start, stop, status = 0, total, 200
    wanted = request.headers.get("Range", "").strip()
    if wanted:
        match = _RANGE.match(wanted)
        first, last = (match.group(1), match.group(2)) if match else ("", "")
        if match and first:
            start, stop = int(first), min(int(last) + 1, total) if last else total
        elif match and last:  # the last N bytes
            start, stop = max(total - int(last), 0), total
        if not match or not (first or last) or start >= stop:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{total}"
            return response
        status = 206
    if start == 0:
        log_access(request.user, project, "dicomweb.series_voxels", series)
    response = HttpResponse(bytes(data[start:stop]), content_type="application/octet-stream", status=status)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
    response["Accept-Ranges"] = "bytes"
    response["X-Shape"] = ",".join(str(n) for n in instances.stored_values.shape)
    response["X-Rescale-Slope"] = repr(float(instances.slope))
    response["X-Rescale-Intercept"] = repr(float(instances.intercept))
    response["Cache-Control"] = "private, max-age=3600"
    return response


# -- the user's API tokens ------------------------------------------------------------------------------
@login_required
def token_list(request):
    form = TokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        _, new_token = create_token(request.user, form.cleaned_data["name"])
    tokens = request.user.api_tokens.all()
    return render(request, "dicomweb/tokens.html", {"form": form, "tokens": tokens, "new_token": new_token})


@login_required
@require_POST
def token_revoke(request, token_id):
    if not revoke_token(request.user, token_id):
        raise Http404("No such active token.")
    messages.success(request, "Token revoked: scripts using it are refused from now on.")
    return redirect("dicomweb:tokens")

"""Site-wide limits and security headers.

- :class:`RequestSizeLimitMiddleware` answers 413 with a page naming the limit when a request body is larger
  than ``MAX_UPLOAD_BYTES`` (or, without files, ``DATA_UPLOAD_MAX_MEMORY_SIZE``), before any of it is read.
- :class:`SecurityHeadersMiddleware` sends ``Content-Security-Policy`` (from ``CONTENT_SECURITY_POLICY``) with
  every response, and ``Cache-Control: no-store`` with every response to a signed-in user or a token
  request: the pages of this site show patients, exams, pseudonym maps and PACS results, and its exports are
  patient data, none of which may stay in a browser's or a proxy's cache.
"""

from django.conf import settings
from django.shortcuts import render
from django.utils.cache import patch_cache_control


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1024 ** 2:,.0f} MB" if n_bytes >= 1024 ** 2 else f"{n_bytes:,} bytes"


class RequestSizeLimitMiddleware:
    """Refuse oversized request bodies from their Content-Length, before CSRF or a view reads them.

    Django reads no more than the Content-Length of a request (a body without one is empty to it), so the
    header bounds what can arrive. A multipart body (file upload) may be up to ``MAX_UPLOAD_BYTES``; any other
    body up to ``DATA_UPLOAD_MAX_MEMORY_SIZE``, as it is held in memory.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length:
            multipart = request.META.get("CONTENT_TYPE", "").startswith("multipart/form-data")
            limit = settings.MAX_UPLOAD_BYTES if multipart else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            if limit is not None and length > limit:
                what = "upload" if multipart else "form"
                # The body is left unread; the connection is closed after the answer so that a client
                # still sending does not have its rest read as the next request.
                response = render(request, "413.html", {
                    "what": what, "size": _megabytes(length), "limit": _megabytes(limit),
                }, status=413)
                response["Connection"] = "close"
                return response
        return self.get_response(request)


def content_security_policy(directives: dict) -> str:
    """The header value for ``{"default-src": ["'self'"], ...}`` (directives in the order given)."""
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())


class SecurityHeadersMiddleware:
    """Content-Security-Policy on every response; ``no-store`` for signed-in users and token requests.

    A view that sets its own ``Content-Security-Policy`` (a page that needs a different one) keeps it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(policy)
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated) or "HTTP_AUTHORIZATION" in request.META:
            # no-store: kept in no cache; private: never in a shared one, for caches that ignore no-store.
            patch_cache_control(response, no_store=True, private=True)
        return response

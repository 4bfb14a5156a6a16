"""DICOM UIDs in URLs: a path converter that lets only digits and dots through (at most 64 characters, the
UI value representation's limit), so that ``?``, ``#``, ``..`` or ``/`` in a study UID never reach the PACS
request built from it; anything else answers 404.

The registry's own rule (:func:`studies.validation.check_uid`, no leading zeros in a component) is stricter;
routes take what a PACS may really hold, as some archives keep UIDs with leading zeros.
"""

import re

UID_MAX_LENGTH = 64
UID_ROUTE_PATTERN = r"[0-9]+(?:\.[0-9]+)*"
_UID_ROUTE_RE = re.compile(UID_ROUTE_PATTERN)


def is_route_uid(value) -> bool:
    """True for digits and dots (no empty component), at most 64 characters."""
    return isinstance(value, str) and len(value) <= UID_MAX_LENGTH and _UID_ROUTE_RE.fullmatch(value) is not None


class DicomUidConverter:
    regex = UID_ROUTE_PATTERN

    def to_python(self, value):
        if not is_route_uid(value):
            raise ValueError(value)  # no match: 404
        return value

    def to_url(self, value):
        if not is_route_uid(value):
            raise ValueError(value)
        return value

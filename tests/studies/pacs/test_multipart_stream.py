"""The streaming multipart/related reader behind WADO-RS retrieval: parts cut exactly whatever the chunking,
with or without Content-Length, and a cut-short answer always detected."""

import pytest

from studies.pacs.client import IncompleteResponse, write_multipart

BOUNDARY = "b0undary-42"
# Part contents chosen to trip a naive reader: CRLFs, dashes and a near-boundary inside the data.
PARTS = [b"DICM" + bytes(range(256)) * 3, b"\r\n--b0undary-4\r\n\r\nx", b"", b"tail--" * 100]


def body(with_length=True):
    out = b"preamble\r\n"
    for part in PARTS:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n".encode()
        if with_length:
            out += f"Content-Length: {len(part)}\r\n".encode()
        out += b"\r\n" + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


class Response:
    """Just what write_multipart reads of a requests.Response: headers and iter_content."""

    def __init__(self, data, chunk):
        self.headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'}
        self._data, self._chunk = data, chunk

    def iter_content(self, chunk_size):
        for k in range(0, len(self._data), self._chunk):
            yield self._data[k:k + self._chunk]


@pytest.mark.parametrize("with_length", [True, False])
@pytest.mark.parametrize("chunk", [1, 2, 7, 13, 64, 1000, 1 << 20])
def test_parts_are_cut_exactly(tmp_path, with_length, chunk):
    seen = []
    paths = write_multipart(Response(body(with_length), chunk), tmp_path,
                            progress=lambda n, size: seen.append((n, size)))
    assert [p.read_bytes() for p in paths] == PARTS
    assert seen[-1] == (len(PARTS), sum(len(p) for p in PARTS))


@pytest.mark.parametrize("with_length", [True, False])
@pytest.mark.parametrize("cut", [5, 40, 300, -30, -3])
def test_an_answer_cut_short_is_incomplete(tmp_path, with_length, cut):
    data = body(with_length)
    (tmp_path / str(cut)).mkdir()
    with pytest.raises(IncompleteResponse, match="ended"):
        write_multipart(Response(data[:cut], 17), tmp_path / str(cut))


def test_unwritable_folder_is_a_clear_error(tmp_path):
    from studies.pacs.client import PacsError

    with pytest.raises(PacsError, match="cannot write the retrieved instances: .*No such file or directory"):
        write_multipart(Response(body(), 64), tmp_path / "missing")

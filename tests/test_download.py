"""`asr-zoo prepare librispeech --download` against a local HTTP server (no internet): all parts
or some, resumed partial downloads (HTTP Range), checksums, unsafe archives."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
from pathlib import Path

import pytest

from asr_zoo.cli import main
from asr_zoo.data.librispeech import LIBRISPEECH_PARTS, ArchiveError, download_librispeech, safe_extract


def _tarball(part: str, corpus: Path | None = None) -> bytes:
    """A gzip tar with ``LibriSpeech/<part>/...``: the tiny corpus's dev split, or one transcript."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if corpus is not None:
            tar.add(corpus / "LibriSpeech" / "dev", arcname=f"LibriSpeech/{part}")
        else:
            data = b"1-2-0000 HELLO\n"
            info = tarfile.TarInfo(f"LibriSpeech/{part}/1/2/1-2.trans.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Server:
    """``http.server`` on 127.0.0.1 in a thread serving ``files`` (name -> bytes), honouring
    ``Range: bytes=N-`` (http.server itself does not) unless ``ranges=False``; logs each request."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.ranges, self.requests = files, ranges, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                body, status = outer.files[name], 200
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and outer.ranges:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    body, status = body[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/resources/12"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(files, ranges=True):
        servers.append(_Server(files, ranges))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_download_without_parts_fetches_every_part_through_the_cli(server, tiny_corpus, tmp_path):
    srv = server({f"{p}.tar.gz": _tarball(p, tiny_corpus) for p in LIBRISPEECH_PARTS})
    root = tmp_path / "ls"
    # --no-md5: the test server's archives are not openslr's bytes
    assert main(["prepare", "librispeech", "--root", str(root), "--download", "--base-url", srv.url, "--no-md5"]) == 0
    for p in LIBRISPEECH_PARTS:
        assert (root / "LibriSpeech" / p / ".extracted").exists()
        assert not (root / f"{p}.tar.gz").exists()  # archives are removed once extracted
    assert len(list((root / "manifests").glob("*_report.json"))) == len(LIBRISPEECH_PARTS)
    n = len(srv.requests)
    assert main(["prepare", "librispeech", "--root", str(root), "--download", "--base-url", srv.url, "--no-md5"]) == 0
    assert len(srv.requests) == n  # finished parts are not fetched again


def test_partial_download_resumes_with_range_and_checks_md5(server, tiny_corpus, tmp_path):
    blob = _tarball("dev-clean", tiny_corpus)
    md5 = hashlib.md5(blob).hexdigest()
    srv = server({"dev-clean.tar.gz": blob})
    root = tmp_path / "ls"
    root.mkdir()
    (root / "dev-clean.tar.gz.part").write_bytes(blob[: len(blob) // 3])  # an interrupted download
    download_librispeech(root, ["dev-clean"], base_url=srv.url, checksums={"dev-clean": md5})
    assert srv.requests == [("dev-clean.tar.gz", f"bytes={len(blob) // 3}-")]
    flacs = sorted((root / "LibriSpeech" / "dev-clean").rglob("*.flac"))
    assert len(flacs) == len(list((tiny_corpus / "LibriSpeech" / "dev").rglob("*.flac"))) > 0
    assert main(["prepare", "librispeech", "--root", str(root), "--parts", "dev-clean"]) == 0


def test_server_without_range_support_restarts_the_download(server, tmp_path):
    blob = _tarball("dev-clean")
    srv = server({"dev-clean.tar.gz": blob}, ranges=False)
    root = tmp_path / "ls"
    root.mkdir()
    (root / "dev-clean.tar.gz.part").write_bytes(blob[:10])
    download_librispeech(root, ["dev-clean"], base_url=srv.url, checksums={"dev-clean": hashlib.md5(blob).hexdigest()})
    assert (root / "LibriSpeech" / "dev-clean" / ".extracted").exists()


def test_corrupt_download_fails_by_checksum_and_is_fetched_again(server, tmp_path, capsys):
    blob = _tarball("dev-clean")
    srv = server({"dev-clean.tar.gz": blob})
    root = tmp_path / "ls"
    root.mkdir()
    (root / "dev-clean.tar.gz.part").write_bytes(b"\0" * 20)  # a partial file with wrong bytes
    with pytest.raises(ArchiveError, match="md5"):
        download_librispeech(root, ["dev-clean"], base_url=srv.url, checksums={"dev-clean": hashlib.md5(blob).hexdigest()})
    assert not (root / "dev-clean.tar.gz").exists() and not (root / "LibriSpeech" / "dev-clean").exists()
    download_librispeech(root, ["dev-clean"], base_url=srv.url, checksums={"dev-clean": hashlib.md5(blob).hexdigest()})
    assert (root / "LibriSpeech" / "dev-clean" / ".extracted").exists()
    # the published md5 list applies by default: the test server's bytes are refused, in one line
    assert main(["prepare", "librispeech", "--root", str(tmp_path / "b"), "--download", "--parts", "dev-clean",
                 "--base-url", srv.url]) == 2
    assert "md5" in capsys.readouterr().err


def test_truncated_archive_is_refused_without_md5(server, tmp_path):
    blob = _tarball("dev-clean")
    srv = server({"dev-clean.tar.gz": blob[: len(blob) - 30]})
    with pytest.raises(ArchiveError, match="not a complete tar.gz"):
        download_librispeech(tmp_path, ["dev-clean"], base_url=srv.url, verify_md5=False)


@pytest.mark.parametrize("use_filter", [True, False])
@pytest.mark.parametrize("evil", ["../escape.txt", "/abs.txt", "link"])
def test_unsafe_members_are_refused(tmp_path, use_filter, evil):
    if use_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(evil)
        if evil == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    dest = tmp_path / "dest"
    dest.mkdir()
    with tarfile.open(fileobj=buf, mode="r:gz") as tar:
        try:
            safe_extract(tar, dest, use_filter=use_filter)
        except ArchiveError:
            pass
        else:  # the data filter may rewrite an absolute name into a relative one instead
            assert evil == "/abs.txt" and use_filter and (dest / "abs.txt").exists()
    assert not (tmp_path / "escape.txt").exists() and not (dest / "link").exists()

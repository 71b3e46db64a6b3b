"""The downloader against a local HTTP server started by the test (never the network).

The server speaks HTTP/1.1 with Range support, and can ignore Range, cut a
body short after announcing its full length, or answer 404/500.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from alexnet_kit.pretrained.download import DownloadError, download
from helpers import free_port

PAYLOAD = os.urandom(3 * 2**20 + 12345)
SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ranges: list = []

    def log_message(self, *args):  # quiet test output
        pass

    def do_GET(self):
        Handler.ranges.append((self.path, self.headers.get("Range")))
        if self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, start = PAYLOAD, 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and self.path.startswith("/file"):
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path.startswith("/cut"):  # announce everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_download_progress_digest_and_atomic_publish(server, tmp_path, capsys):
    dest = download(f"{server}/file/w.bin", tmp_path / "w.bin", SHA256, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert _files(tmp_path) == ["w.bin"]
    err = capsys.readouterr().err
    assert "w.bin" in err and "100%" in err and "B/s" in err  # tqdm's bar: bytes, rate


def test_cut_connection_keeps_part_then_resumes_with_range(server, tmp_path):
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError, match=r"/cut/w.bin: .*partial download kept in .*w.bin.part: run again to resume") as e:
        download(f"{server}/cut/w.bin", dest, SHA256, progress=False)
    assert "\n" not in str(e.value)
    assert not dest.exists()
    part = tmp_path / "w.bin.part"
    assert part.stat().st_size == len(PAYLOAD) // 2
    Handler.ranges.clear()
    download(f"{server}/file/w.bin", dest, SHA256, progress=False)
    assert Handler.ranges == [("/file/w.bin", f"bytes={len(PAYLOAD) // 2}-")]  # only the rest was asked for
    assert dest.read_bytes() == PAYLOAD and _files(tmp_path) == ["w.bin"]


def test_server_that_ignores_range_still_gives_the_right_file(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD[:1000])
    download(f"{server}/plain/w.bin", tmp_path / "w.bin", SHA256, progress=False)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD and _files(tmp_path) == ["w.bin"]


def test_partial_longer_than_the_file_starts_over(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(os.urandom(len(PAYLOAD) + 10))
    download(f"{server}/file/w.bin", tmp_path / "w.bin", SHA256, progress=False)
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_digest_mismatch_refused_nothing_left(server, tmp_path):
    with pytest.raises(DownloadError, match="differs from the published 0000000000; download discarded, nothing written"):
        download(f"{server}/file/w.bin", tmp_path / "w.bin", "sha256:0000000000", progress=False)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("code", [404, 500])
def test_http_errors_one_line_nothing_written(server, tmp_path, code):
    with pytest.raises(DownloadError, match=f"HTTP {code} .*; nothing written") as e:
        download(f"{server}/status/{code}", tmp_path / "w.bin", SHA256, progress=False)
    assert "\n" not in str(e.value)
    assert _files(tmp_path) == []


def test_refused_connection_one_line(tmp_path):
    with pytest.raises(DownloadError, match="network error"):
        download(f"http://127.0.0.1:{free_port()}/w.bin", tmp_path / "w.bin", SHA256, progress=False)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("code", [404, 500])
def test_cli_server_error_one_line_and_empty_cache(server, tmp_path, monkeypatch, capsys, code):
    from alexnet_kit.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ALEXNET_KIT_OFFLINE")
    monkeypatch.setenv("ALEXNET_KIT_PRETRAINED_CAFFE_URL", f"{server}/status/{code}")
    assert main(["pretrained", "caffe", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"HTTP {code}" in err[0] and "nothing written" in err[0]
    cache = tmp_path / "cache" / "alexnet-kit" / "pretrained"
    # nothing downloaded; the empty lock file that `--model caffe` also leaves may be there
    assert not cache.exists() or set(_files(cache)) <= {".caffe.lock"}
    # the same through a pretrained name given as a model
    assert main(["info", "caffe"]) == 2
    assert f"HTTP {code}" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("out", [False, True])
def test_cli_download_waits_for_the_cache_lock(server, tmp_path, out, monkeypatch):
    """`pretrained caffe` (with or without --out) downloads under the same lock as `--model caffe`:
    while another process holds it, this one waits instead of writing the same .part file."""
    import fcntl
    import subprocess
    import sys
    import time

    cache = tmp_path / "cache"
    monkeypatch.delenv("ALEXNET_KIT_OFFLINE")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "ALEXNET_KIT_PRETRAINED_CAFFE_URL": f"{server}/status/404"}
    lock = cache / "alexnet-kit" / "pretrained" / ".caffe.lock"
    lock.parent.mkdir(parents=True)
    args = ["pretrained", "caffe", "--quiet"] + (["--out", str(tmp_path / "c.safetensors")] if out else [])
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-m", "alexnet_kit", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(6)  # a 404 without the lock ends in about a second
        assert proc.poll() is None, proc.communicate()
        fcntl.flock(held, fcntl.LOCK_UN)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "HTTP 404" in err and len(err.strip().splitlines()) == 1, err


def test_the_light_list_of_names_is_the_registry_s():
    """The CLI lists pretrained.NAMES at start-up without loading the registry (torch): the two must agree."""
    from alexnet_kit import pretrained
    from alexnet_kit.pretrained import registry

    assert pretrained.NAMES == registry.NAMES == tuple(registry.SOURCES)

"""pixgen.download against a local HTTP server with injected faults (no internet)."""
from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading

import pytest
from http_fixture import FileServer

import pixgen.download as dl
from pixgen.download import DownloadError, download, partial_path

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = dict(progress=False, backoff=0.001, timeout=2.0)


@pytest.fixture
def server():
    srv = FileServer().start()
    yield srv
    srv.stop()


def test_downloads_file_and_leaves_no_temporary(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    assert download([url], dest, size=len(DATA), sha256=SHA, verify=None, retries=0, **FAST) == dest
    assert dest.read_bytes() == DATA
    assert not partial_path(dest).exists()


def test_dropped_connection_resumes_with_range(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    server.fail("/m.ckpt", "drop")
    dest = tmp_path / "m.ckpt"
    download([url], dest, size=None, sha256=SHA, verify=None, retries=2, **FAST)
    assert dest.read_bytes() == DATA
    ranges = [r for p, r in server.requests if p == "/m.ckpt"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(DATA) // 2}-"


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.range_support = False
    url = server.add("/m.ckpt", DATA)
    server.fail("/m.ckpt", "drop")
    dest = tmp_path / "m.ckpt"
    download([url], dest, size=len(DATA), sha256=SHA, verify=None, retries=2, **FAST)
    assert dest.read_bytes() == DATA  # the 200 answer replaced the partial data instead of being appended


def test_server_errors_are_retried_then_succeed(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    server.fail("/m.ckpt", "500", "500")
    dest = tmp_path / "m.ckpt"
    download([url], dest, size=None, sha256=None, verify=None, retries=2, **FAST)
    assert dest.read_bytes() == DATA and server.hits("/m.ckpt") == 3


def test_404_moves_to_next_mirror_without_retrying(server, tmp_path):
    good = server.add("/good.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    download([server.url("/missing.ckpt"), good], dest, size=None, sha256=SHA, verify=None, retries=3, **FAST)
    assert dest.read_bytes() == DATA
    assert server.hits("/missing.ckpt") == 1


def test_html_page_is_refused_and_next_mirror_used(server, tmp_path):
    first = server.add("/login.ckpt", DATA)
    server.always("/login.ckpt", "html")
    good = server.add("/good.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    download([first, good], dest, size=None, sha256=None, verify=None, retries=1, **FAST)
    assert dest.read_bytes() == DATA
    assert server.hits("/login.ckpt") == 1


def test_checksum_mismatch_discards_file_and_tries_next_mirror(server, tmp_path):
    bad = server.add("/bad.ckpt", DATA)
    server.always("/bad.ckpt", "garbage")
    good = server.add("/good.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    download([bad, good], dest, size=len(DATA), sha256=SHA, verify=None, retries=1, **FAST)
    assert dest.read_bytes() == DATA


def test_checksum_mismatch_everywhere_fails_and_caches_nothing(server, tmp_path):
    bad = server.add("/bad.ckpt", DATA)
    server.always("/bad.ckpt", "garbage")
    dest = tmp_path / "m.ckpt"
    with pytest.raises(DownloadError) as info:
        download([bad], dest, size=None, sha256=SHA, verify=None, retries=1, **FAST)
    text = str(info.value)
    assert "checksum mismatch" in text and bad in text and str(dest) in text and "by hand" in text
    assert not dest.exists() and not partial_path(dest).exists()


def test_wrong_expected_size_is_refused_before_download(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    with pytest.raises(DownloadError, match="should be 12345 bytes"):
        download([url], dest, size=12345, sha256=None, verify=None, retries=0, **FAST)
    assert not dest.exists()


def test_lying_content_length_recovers_when_server_confirms_total(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    server.always("/m.ckpt", "lie_length")
    dest = tmp_path / "m.ckpt"
    download([url], dest, size=None, sha256=SHA, verify=None, retries=1, **FAST)
    assert dest.read_bytes() == DATA  # the resume request's 416 said the file is complete


def test_lying_content_length_without_range_fails_and_keeps_partial(server, tmp_path):
    server.range_support = False
    url = server.add("/m.ckpt", DATA)
    server.always("/m.ckpt", "lie_length")
    dest = tmp_path / "m.ckpt"
    with pytest.raises(DownloadError, match="closed after") as info:
        download([url], dest, size=None, sha256=None, verify=None, retries=1, name="tiny", **FAST)
    assert not dest.exists()
    assert partial_path(dest).read_bytes() == DATA
    assert "kept in" in str(info.value) and "pixgen models download tiny --url" in str(info.value)


def test_slow_server_times_out_and_retry_succeeds(server, tmp_path):
    server.slow_s = 0.8
    url = server.add("/m.ckpt", DATA)
    server.fail("/m.ckpt", "slow")
    dest = tmp_path / "m.ckpt"
    download([url], dest, size=None, sha256=SHA, verify=None, retries=1, progress=False, backoff=0.001,
             timeout=0.2)
    assert dest.read_bytes() == DATA and server.hits("/m.ckpt") == 2


def test_failed_verification_rejects_file(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"

    def verify(path):
        assert path != dest  # checks run on the temporary file, before it is renamed into place
        raise ValueError("missing key encoder.conv_in.weight")

    with pytest.raises(DownloadError, match="missing key encoder.conv_in.weight"):
        download([url], dest, size=None, sha256=None, verify=verify, retries=0, **FAST)
    assert not dest.exists() and not partial_path(dest).exists()


def test_disk_full_keeps_partial_then_resumes(server, tmp_path, monkeypatch):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    real_open = dl._open_part

    class FullDisk:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, block):
            if self.writes == 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.writes += 1
            return self.f.write(block)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(dl, "CHUNK_BYTES", 65536)
    monkeypatch.setattr(dl, "_open_part", lambda path, mode: FullDisk(real_open(path, mode)))
    with pytest.raises(DownloadError, match="disk is full") as info:
        download([url], dest, size=len(DATA), sha256=SHA, verify=None, retries=3, **FAST)
    assert "kept" in info.value.hint
    kept = partial_path(dest).stat().st_size
    assert 0 < kept < len(DATA) and server.hits("/m.ckpt") == 1  # no retry loop against a full disk

    monkeypatch.setattr(dl, "_open_part", real_open)
    download([url], dest, size=len(DATA), sha256=SHA, verify=None, retries=0, **FAST)
    assert dest.read_bytes() == DATA
    assert server.requests[-1][1] == f"bytes={kept}-"


def test_complete_partial_is_accepted_on_416(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    partial_path(dest).write_bytes(DATA)
    download([url], dest, size=None, sha256=SHA, verify=None, retries=0, **FAST)
    assert dest.read_bytes() == DATA


def test_two_concurrent_downloads_fetch_once(server, tmp_path):
    server.slow_s = 0.4
    url = server.add("/m.ckpt", DATA)
    server.fail("/m.ckpt", "slow")
    dest = tmp_path / "m.ckpt"
    results, errors = [], []

    def run():
        try:
            results.append(download([url], dest, size=None, sha256=SHA, verify=None, retries=0, **FAST))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and results == [dest, dest]
    assert server.hits("/m.ckpt") == 1 and dest.read_bytes() == DATA


def test_offline_error_names_url_target_and_manual_steps(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    url = f"http://127.0.0.1:{port}/m.ckpt"
    dest = tmp_path / "m.ckpt"
    with pytest.raises(DownloadError) as info:
        download([url], dest, size=None, sha256=None, verify=None, retries=2, name="tiny", **FAST)
    err = info.value
    assert "offline" in err.message and url in err.message
    assert f"download it yourself from {url} and save it as {dest}" in err.hint


def test_no_urls_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="no download URL"):
        download([], tmp_path / "x.ckpt", size=None, sha256=None, verify=None, **FAST)


def test_partial_from_another_file_is_discarded_and_downloaded_again_in_the_same_call(server, tmp_path, capsys):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    partial_path(dest).write_bytes(os.urandom(len(DATA) // 3))  # left over from another file or version
    download([url], dest, size=None, sha256=SHA, verify=None, retries=0, **dict(FAST, progress=True))
    assert dest.read_bytes() == DATA and not partial_path(dest).exists()
    ranges = [r for p, r in server.requests if p == "/m.ckpt"]
    assert ranges == [f"bytes={len(DATA) // 3}-", None]  # resumed, then once more from byte 0
    assert "starts again from the beginning" in capsys.readouterr().err


def test_a_fresh_download_that_fails_its_check_is_not_restarted(server, tmp_path):
    url = server.add("/m.ckpt", DATA)
    dest = tmp_path / "m.ckpt"
    partial_path(dest).write_bytes(os.urandom(1000))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download([url], dest, size=None, sha256="0" * 64, verify=None, retries=0, **FAST)
    assert server.hits("/m.ckpt") == 2 and not dest.exists() and not partial_path(dest).exists()

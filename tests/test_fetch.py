"""scripts.fetch against a real HTTP server on 127.0.0.1 whose replies each test scripts."""
import collections
import hashlib
import http.server
import io
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from scripts.core.errors import PipelineError
from scripts.data.fetch import fetch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = bytes(range(256)) * 4096  # 1 MiB, so progress has tenths to report


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class ScriptedServer(http.server.ThreadingHTTPServer):
    """Replies to each path from a script of (kind, value) steps; the last step repeats.

    Kinds: ("ok", body), ("status", code), ("drop", body) sends the full Content-Length
    but only half the body, then hangs up; ("hang", None) sends nothing until teardown.
    """
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.scripts = {}
        self.requests = collections.Counter()
        self.release = threading.Event()

    def script(self, path, *steps):
        self.scripts[path] = list(steps)
        return f"http://127.0.0.1:{self.server_port}{path}"

    def next_step(self, path):
        self.requests[path] += 1
        steps = self.scripts.get(path, [("status", 404)])
        return steps.pop(0) if len(steps) > 1 else steps[0]


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        kind, value = self.server.next_step(self.path)
        if kind == "status":
            self.send_error(value)
        elif kind == "hang":
            self.server.release.wait(10)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(value)))
            self.end_headers()
            self.wfile.write(value if kind == "ok" else value[: len(value) // 2])

    def log_message(self, *args):
        pass  # keep pytest's output for the tests' own failures


@pytest.fixture
def server():
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield scripted
    scripted.release.set()
    scripted.shutdown()
    scripted.server_close()


def read(path):
    return pathlib.Path(path).read_bytes()


@pytest.mark.parametrize("first_failure, reason", [
    (("status", 500), "(HTTP 500 Internal Server Error)"),
    (("drop", BODY), f"(connection dropped after {len(BODY) // 2} of {len(BODY)} bytes)"),
], ids=["http-500", "dropped-mid-file"])
def test_transient_failure_is_retried_once_then_succeeds(server, tmp_path, first_failure, reason):
    url = server.script("/data.bin", first_failure, ("ok", BODY))
    output = tmp_path / "data.bin"
    progress = io.StringIO()
    digest = fetch(url, output, retries=3, progress=progress)
    assert read(output) == BODY
    assert digest == sha256(BODY)
    assert server.requests["/data.bin"] == 2
    assert f"attempt 1 of 4 failed {reason}" in progress.getvalue()


def test_http_404_fails_at_once_with_one_line_and_leaves_nothing(server, tmp_path):
    url = server.script("/missing.tgz", ("status", 404))
    with pytest.raises(PipelineError) as caught:
        fetch(url, tmp_path / "missing.tgz", retries=3, progress=None)
    assert str(caught.value) == f"download of {url} failed: HTTP 404 Not Found"
    assert server.requests["/missing.tgz"] == 1
    assert os.listdir(tmp_path) == []


def test_wrong_sha256_names_both_hashes_and_leaves_no_output(server, tmp_path):
    url = server.script("/data.bin", ("ok", b"tampered"))
    expected = sha256(b"genuine")
    with pytest.raises(PipelineError) as caught:
        fetch(url, tmp_path / "data.bin", sha256=expected, progress=None)
    message = str(caught.value)
    assert expected in message and sha256(b"tampered") in message and url in message
    assert "\n" not in message
    assert os.listdir(tmp_path) == []


def test_correct_sha256_passes(server, tmp_path):
    url = server.script("/data.bin", ("ok", BODY))
    output = tmp_path / "data.bin"
    assert fetch(url, output, sha256=sha256(BODY).upper(), progress=None) == sha256(BODY)
    assert read(output) == BODY


def test_first_hash_is_recorded_and_a_changed_upstream_fails(server, tmp_path):
    output = tmp_path / "data.bin"
    record = tmp_path / "data.bin.sha256"
    url = server.script("/data.bin", ("ok", b"version 1"))
    fetch(url, output, progress=None)
    assert record.read_text().split()[0] == sha256(b"version 1")
    fetch(url, output, progress=None)  # unchanged upstream: the record still matches

    server.script("/data.bin", ("ok", b"version 2"))
    with pytest.raises(PipelineError) as caught:
        fetch(url, output, progress=None)
    message = str(caught.value)
    assert sha256(b"version 1") in message and sha256(b"version 2") in message
    assert read(output) == b"version 1"  # the earlier good file is untouched
    assert record.read_text().split()[0] == sha256(b"version 1")
    assert sorted(os.listdir(tmp_path)) == ["data.bin", "data.bin.sha256"]


def test_hanging_server_times_out_after_the_retries(server, tmp_path):
    url = server.script("/slow.bin", ("hang", None))
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        fetch(url, tmp_path / "slow.bin", retries=1, timeout=0.5, progress=None)
    assert time.monotonic() - started < 5
    assert "failed after 2 attempts" in str(caught.value)
    assert "timed out" in str(caught.value)
    assert server.requests["/slow.bin"] == 2
    assert os.listdir(tmp_path) == []


def test_refused_connection_is_retried_then_fails(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.bin"
    with pytest.raises(PipelineError) as caught:
        fetch(url, tmp_path / "data.bin", retries=1, progress=None)
    assert "failed after 2 attempts" in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_progress_is_reported_by_tenths_not_per_chunk(server, tmp_path):
    url = server.script("/data.bin", ("ok", BODY))
    progress = io.StringIO()
    fetch(url, tmp_path / "data.bin", progress=progress)
    lines = progress.getvalue().splitlines()
    assert 1 <= len(lines) <= 11  # 16 chunks of 64 KiB: per chunk would be 16 lines
    assert lines[-1].endswith("(100%)")


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "plain-path"])
def test_local_sources_are_copied(tmp_path, as_url):
    source = tmp_path / "source" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(BODY)
    output = tmp_path / "out" / "data.bin"
    digest = fetch(source.as_uri() if as_url else str(source), output, progress=None)
    assert read(output) == BODY
    assert digest == sha256(BODY)


def test_missing_local_source_fails_naming_it(tmp_path):
    missing = str(tmp_path / "nowhere.tgz")
    with pytest.raises(PipelineError, match="nowhere.tgz: cannot read"):
        fetch(missing, tmp_path / "out.tgz", progress=None)
    assert os.listdir(tmp_path) == []


def run_cli(*args):
    limits = ["--retries", "3", "--timeout", "60"]  # as the rule always passes them
    return subprocess.run([sys.executable, "-m", "scripts.data.fetch", *args, *limits],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_prints_one_error_line_and_exits_1_on_404(server, tmp_path):
    url = server.script("/missing.tgz", ("status", 404))
    result = run_cli("--source", url, "--output", str(tmp_path / "missing.tgz"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: download of {url} failed: HTTP 404 Not Found"
    assert os.listdir(tmp_path) == []


def test_cli_prints_the_sha256_and_accepts_an_empty_sha256(server, tmp_path):
    # The Snakemake rule passes --sha256 '' when the config's sha256 is null.
    url = server.script("/data.bin", ("ok", BODY))
    output = tmp_path / "data.bin"
    result = run_cli("--source", url, "--output", str(output), "--sha256", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{sha256(BODY)}  {output}"
    assert (tmp_path / "data.bin.sha256").exists()

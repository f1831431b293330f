"""Download or copy one file atomically, retrying network hiccups and checking its sha256.

The source is an http(s) URL, a file:// URL or a local path. The file is written to a
hidden temporary name beside the output and renamed only once complete and verified.
Without an expected sha256, the first fetch's hash is recorded in ``OUTPUT.sha256``
(not a Snakemake output, so it survives reruns) and later fetches must match it.

Entry point:
    python -m scripts.data.fetch --source URL --output FILE [--sha256 HEX] [--retries 3] [--timeout 60]
"""
import argparse
import hashlib
import http.client
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from scripts.core import atomic
from scripts.core.errors import PipelineError, run_cli

CHUNK_BYTES = 1 << 16
BACKOFF_SECONDS = 0.5  # times the attempt number: short, since most hiccups pass quickly
PROGRESS_SECONDS = 2.0
USER_AGENT = "transfer-learning-pipeline/1 (python urllib)"


class TransientError(Exception):
    """A download failure worth another attempt: connection trouble, timeout, 5xx or 429."""


def fetch(source, output, sha256=None, retries=3, timeout=60, progress=sys.stderr):
    """Fetch ``source`` to ``output`` and return its hex sha256.

    ``retries`` is the number of extra attempts after a transient failure, ``timeout``
    the seconds a network read may wait, ``progress`` a text stream (or None) for
    progress lines. A hash mismatch raises PipelineError and leaves no output.
    """
    output = os.fspath(output)
    expected = normalise_sha256(source, sha256)
    local = local_path(source)
    with atomic.atomic_path(output) as temp:
        if local is None:
            actual = download(source, temp, retries, timeout, progress)
        else:
            actual = copy_local(source, local, temp)
        check_sha256(source, output, expected, actual)
    return actual


def normalise_sha256(source, sha256):
    """The expected hash in lower case, or None; fails early on a malformed one."""
    if sha256 is None or not str(sha256).strip():
        return None
    value = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise PipelineError(f"{source}: expected sha256 {sha256!r} is not 64 hex digits")
    return value


def local_path(source):
    """The file a file:// URL or plain path names, or None for an http(s) URL."""
    parsed = urllib.parse.urlsplit(os.fspath(source))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise PipelineError(f"{source}: file:// URLs must name a local file (no host)")
        return urllib.request.url2pathname(parsed.path)
    if len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise PipelineError(f"{source}: unsupported URL scheme {parsed.scheme!r} "
                            "(use http, https, file or a local path)")
    return os.fspath(source)


def copy_local(source, path, temp):
    """Copy a local regular file: a FIFO or a device (/dev/zero) could block or never end."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise PipelineError(f"{source}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO put there meanwhile must not block
    except OSError as error:
        raise PipelineError(f"{source}: cannot read ({error.strerror})") from error
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PipelineError(f"{source}: not a regular file")
        return save_stream(stream, temp)[0]


def save_stream(stream, temp, meter=None):
    """Copy a binary stream to ``temp`` in chunks; return (hex sha256, byte count)."""
    digest = hashlib.sha256()
    size = 0
    with open(temp, "wb") as out:
        while chunk := stream.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if meter:
                meter.update(size)
    return digest.hexdigest(), size


# ------------------------------------------------------------------ downloads
def download(url, temp, retries, timeout, progress):
    """Download with up to ``retries`` extra attempts after transient failures."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return download_once(url, temp, timeout, progress)
        except TransientError as failure:
            last_failure = failure
            if attempt < attempts:
                pause = BACKOFF_SECONDS * attempt
                say(progress, f"download {url}: attempt {attempt} of {attempts} failed "
                              f"({failure}); retrying in {pause:g} s")
                time.sleep(pause)
    raise PipelineError(f"download of {url} failed after {attempts} attempts: {last_failure}")


def download_once(url, temp, timeout, progress):
    """One attempt; raises TransientError for what a retry may fix, PipelineError otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            expected_size = content_length(response)
            meter = ProgressMeter(url, expected_size, progress)
            digest, size = save_stream(response, temp, meter)
    except urllib.error.HTTPError as error:
        error.close()
        reason = f"HTTP {error.code} {error.reason}"
        if error.code >= 500 or error.code == 429:
            raise TransientError(reason) from error
        raise PipelineError(f"download of {url} failed: {reason}") from error
    except (OSError, http.client.HTTPException) as error:
        raise TransientError(describe(error, timeout)) from error
    # urllib returns a short body without complaint when the server hangs up early.
    if expected_size is not None and size < expected_size:
        raise TransientError(f"connection dropped after {size} of {expected_size} bytes")
    meter.finish(size)
    return digest


def content_length(response):
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def describe(error, timeout):
    """A one-line reason for a network error, unwrapping urllib's URLError."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError):
        return f"no data for {timeout:g} s (timed out)"
    text = str(reason) or type(reason).__name__
    return " ".join(text.split())


class ProgressMeter:
    """Prints a progress line every PROGRESS_SECONDS or every tenth of the file, not per chunk."""

    def __init__(self, url, total, stream):
        self.url, self.total, self.stream = url, total, stream
        self.last_time = time.monotonic()
        self.last_tenth = 0
        self.printed_size = None

    def update(self, size):
        now = time.monotonic()
        tenth = size * 10 // self.total if self.total else self.last_tenth
        if tenth > self.last_tenth or now - self.last_time >= PROGRESS_SECONDS:
            self.last_time, self.last_tenth = now, tenth
            self.report(size)

    def finish(self, size):
        if self.printed_size != size:
            self.report(size)

    def report(self, size):
        line = f"download {self.url}: {megabytes(size)}"
        if self.total:
            line += f" of {megabytes(self.total)} ({100 * size // self.total}%)"
        say(self.stream, line)
        self.printed_size = size


def megabytes(size):
    return f"{size / 1e6:.1f} MB"


def say(stream, line):
    if stream is not None:
        print(line, file=stream, flush=True)


# ------------------------------------------------------------------ the hash record
def check_sha256(source, output, expected, actual):
    """Compare with the expected hash, or with (and else create) the record beside the output."""
    if expected is not None:
        if actual != expected:
            raise PipelineError(f"{source}: sha256 is {actual}, expected {expected}")
        return
    record = output + ".sha256"
    recorded = read_record(record)
    if recorded is None:
        # sha256sum's format, so `sha256sum -c` works in the output's folder.
        atomic.write_text(record, f"{actual}  {os.path.basename(output)}\n")
    elif recorded != actual:
        raise PipelineError(f"{source}: sha256 is {actual}, but {record} recorded {recorded} "
                            "(the upstream file changed; delete the record to accept it)")


def read_record(record):
    """The hash in a record file, or None when there is none yet."""
    try:
        with open(record, encoding="utf-8") as handle:
            words = handle.read().split()
    except FileNotFoundError:
        return None
    return words[0].lower() if words else None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Prints '<sha256>  <output>' when done; errors are one 'error:' line, exit 1.")
    parser.add_argument("--source", required=True,
                        help="http(s) URL, file:// URL or local path of the file")
    parser.add_argument("--output", required=True, help="the file to write (atomically)")
    parser.add_argument("--sha256", default=None,
                        help="expected sha256 (hex); empty or absent: the first fetch's hash is "
                             "recorded in OUTPUT.sha256 and later fetches must match it")
    parser.add_argument("--retries", type=int, required=True,
                        help="extra attempts after a transient network failure (download.retries)")
    parser.add_argument("--timeout", type=float, required=True,
                        help="seconds a network read may wait for data (download.timeout_seconds)")
    args = parser.parse_args(argv)
    if args.retries < 0 or args.timeout <= 0:
        parser.error("--retries must be >= 0 and --timeout > 0")
    digest = fetch(args.source, args.output, args.sha256, args.retries, args.timeout)
    print(f"{digest}  {args.output}")


if __name__ == "__main__":
    run_cli(main)

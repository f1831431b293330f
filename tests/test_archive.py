"""scripts.archive on real tar and zip files built in tmp_path, good and hostile."""
import bz2
import gzip
import io
import lzma
import os
import stat
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest

from scripts.core.errors import PipelineError
from scripts.data import archive as archive_module
from scripts.data.archive import Entry, extract, unpack

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENTS = {
    "flowers/daisy/a.jpg": os.urandom(3000),
    "flowers/roses/b.jpg": os.urandom(5000),
    "LICENSE.txt": b"CC-BY\n",
}
BOMB_BYTES = 50_000_000
SMALL_CAP = 1_000_000


def tree(folder):
    """Every path below ``folder``, relative, to show what a run created anywhere."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def tar_member(name, data=b"", kind=tarfile.REGTYPE, **fields):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for field, value in fields.items():
        setattr(info, field, value)
    return info, io.BytesIO(data) if data else None


def write_tar(path, members, mode="w:gz"):
    """``members``: (TarInfo, data stream or None) pairs, as tar_member makes them."""
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def write_zip(path, files, external_attr=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if external_attr is not None:
                info.external_attr = external_attr
            archive.writestr(info, data)
    return path


def good_tar(path, mode):
    members = [tar_member("flowers", kind=tarfile.DIRTYPE)]
    members += [tar_member(name, data) for name, data in CONTENTS.items()]
    return write_tar(path, members, mode)


# Each name is "archive.bin": the format must come from the content, not the extension.
GOOD_ARCHIVES = {
    "tar.gz": lambda path: good_tar(path, "w:gz"),
    "tar": lambda path: good_tar(path, "w"),
    "tar.bz2": lambda path: good_tar(path, "w:bz2"),
    "tar.xz": lambda path: good_tar(path, "w:xz"),
    "zip": lambda path: write_zip(path, {"flowers/": b"", **CONTENTS}),
}


@pytest.mark.parametrize("kind", GOOD_ARCHIVES)
def test_good_archive_extracts_every_file(tmp_path, kind):
    archive = GOOD_ARCHIVES[kind](tmp_path / "archive.bin")
    target = tmp_path / "raw"
    files = extract(archive, target, max_bytes=SMALL_CAP)
    assert sorted(files) == sorted(CONTENTS)
    for name, data in CONTENTS.items():
        assert (target / name).read_bytes() == data
    assert not any(name.startswith(".raw.tmp-") for name in os.listdir(tmp_path))


def test_file_modes_are_normalised(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", [tar_member("run.sh", b"#!/bin/sh\n", mode=0o6777)])
    extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP)
    mode = stat.S_IMODE(os.stat(tmp_path / "raw" / "run.sh").st_mode)
    assert mode & 0o7133 == 0  # no setuid/setgid/sticky, no exec, no group/other write


def test_extract_replaces_an_earlier_target(tmp_path):
    target = tmp_path / "raw"
    target.mkdir()
    (target / "stale.jpg").write_bytes(b"old")
    extract(good_tar(tmp_path / "a.tgz", "w:gz"), target, max_bytes=SMALL_CAP)
    assert tree(target) == sorted(["LICENSE.txt", "flowers", "flowers/daisy", "flowers/daisy/a.jpg",
                                   "flowers/roses", "flowers/roses/b.jpg"])


# name -> (builder, member named in the error); each must fail without writing anything.
HOSTILE = {
    "tar-dotdot": (lambda p: write_tar(p, [tar_member("../evil", b"x")]), "../evil"),
    "tar-absolute": (lambda p: write_tar(p, [tar_member("/abs/evil", b"x")]), "/abs/evil"),
    "tar-symlink": (lambda p: write_tar(p, [
        tar_member("link", kind=tarfile.SYMTYPE, linkname="../../outside"),
        tar_member("link/evil", b"x")]), "link"),
    "tar-hardlink": (lambda p: write_tar(p, [
        tar_member("hard", kind=tarfile.LNKTYPE, linkname="../../outside")]), "hard"),
    "tar-chardev": (lambda p: write_tar(p, [
        tar_member("dev", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)]), "dev"),
    "tar-fifo": (lambda p: write_tar(p, [tar_member("pipe", kind=tarfile.FIFOTYPE)]), "pipe"),
    "tar-drive": (lambda p: write_tar(p, [tar_member("C:evil", b"x")]), "C:evil"),
    "zip-dotdot": (lambda p: write_zip(p, {"../evil.txt": b"x"}), "../evil.txt"),
    "zip-backslash": (lambda p: write_zip(p, {"..\\evil.txt": b"x"}), "..\\evil.txt"),
    "zip-symlink": (lambda p: write_zip(p, {"link": b"../../outside"},
                                        external_attr=(stat.S_IFLNK | 0o777) << 16), "link"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_member_is_refused_and_nothing_is_written(tmp_path, case):
    build, member = HOSTILE[case]
    # Two levels down, so even "../../outside" from the work folder stays in tmp_path.
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = build(work / "archive.bin")
    before = tree(tmp_path)
    with pytest.raises(PipelineError) as caught:
        extract(archive, work / "raw", max_bytes=SMALL_CAP)
    message = str(caught.value)
    assert f"refusing member '{member}'" in message
    assert "\n" not in message
    assert tree(tmp_path) == before
    assert not (work / "raw").exists()


def test_zip_bomb_fails_cleanly(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(BOMB_BYTES)})
    assert os.path.getsize(archive) < SMALL_CAP  # it really is a bomb
    assert_too_big(archive, tmp_path)


def test_tar_bomb_fails_cleanly(tmp_path):
    archive = write_tar(tmp_path / "bomb.tgz", [tar_member("zeros.bin", bytes(BOMB_BYTES))])
    assert os.path.getsize(archive) < SMALL_CAP
    assert_too_big(archive, tmp_path)


def test_many_small_members_add_up_to_the_cap(tmp_path):
    members = [tar_member(f"part{index}.bin", bytes(300_000)) for index in range(4)]
    assert_too_big(write_tar(tmp_path / "parts.tgz", members), tmp_path)


def assert_too_big(archive, tmp_path):
    before = tree(tmp_path)
    with pytest.raises(PipelineError) as caught:
        extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP)
    assert str(caught.value) == (f"{archive}: unpacks to more than {SMALL_CAP} bytes "
                                 "(download.max_extract_bytes)")
    assert tree(tmp_path) == before


def test_streamed_bytes_are_counted_even_when_the_declared_size_passes(tmp_path):
    # The standard readers stop at the declared size, so a lying reader is simulated here.
    liar = Entry("big.bin", False, 10, lambda: io.BytesIO(bytes(2 * SMALL_CAP)))
    with pytest.raises(PipelineError, match="unpacks to more than"):
        unpack("liar.zip", [liar], str(tmp_path), SMALL_CAP)
    assert os.path.getsize(tmp_path / "big.bin") <= SMALL_CAP


def test_zip_whose_members_share_their_data_is_refused(tmp_path):
    # The overlapping-member zip bomb: several central entries point at one local header.
    archive = write_zip(tmp_path / "overlap.zip", {"a.bin": bytes(100_000), "b.bin": bytes(100_000)})
    data = bytearray(archive.read_bytes())
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[second + 42:second + 46] = (0).to_bytes(4, "little")  # b.bin's local header offset: a.bin's
    archive.write_bytes(bytes(data))
    assert_refused(archive, tmp_path, "refusing member 'a.bin': its data overlaps the next member's")


def test_zip_whose_header_understates_the_size_fails_cleanly(tmp_path):
    archive = write_zip(tmp_path / "liar.zip", {"big.bin": bytes(2 * SMALL_CAP)})
    data = bytearray(archive.read_bytes())
    # Claim 1000 bytes in the local header (offset 22) and the central directory (offset 24).
    data[22:26] = (1000).to_bytes(4, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    assert zipfile.ZipFile(archive).getinfo("big.bin").file_size == 1000
    before = tree(tmp_path)
    with pytest.raises(PipelineError) as caught:
        extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP)
    assert "cannot unpack this zip archive" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert tree(tmp_path) == before


def test_truncated_tar_gz_fails_with_one_line(tmp_path):
    archive = good_tar(tmp_path / "data.tar.gz", "w:gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    before = tree(tmp_path)
    with pytest.raises(PipelineError) as caught:
        extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP)
    message = str(caught.value)
    assert message.startswith(f"{archive}: cannot unpack this tar.gz archive, truncated or corrupt?")
    assert "\n" not in message
    assert tree(tmp_path) == before


def test_html_page_is_recognised(tmp_path):
    page = tmp_path / "data.tar.gz"
    page.write_text("\n  <!DOCTYPE html>\n<html><body>Please sign in</body></html>\n")
    with pytest.raises(PipelineError) as caught:
        extract(page, tmp_path / "raw", max_bytes=SMALL_CAP)
    assert str(caught.value) == (f"{page}: is an HTML page, not an archive "
                                 "(a login or error page served instead of the file?)")
    assert not (tmp_path / "raw").exists()


def test_unknown_format_lists_the_supported_ones(tmp_path):
    blob = tmp_path / "data.zip"
    blob.write_bytes(b"\x00\x01 not an archive at all" * 40)
    with pytest.raises(PipelineError, match=r"supported format \(zip, tar, tar\.gz"):
        extract(blob, tmp_path / "raw", max_bytes=SMALL_CAP)
    assert not (tmp_path / "raw").exists()


# ---------------------------------------------------------------- issue 17: deep, bombs, counts, ends, names

def assert_refused(archive, tmp_path, match, **limits):
    """The archive is refused with one short line matching ``match``; nothing is left behind."""
    before = tree(tmp_path)
    with pytest.raises(PipelineError, match=match) as caught:
        extract(archive, tmp_path / "raw", **{"max_bytes": SMALL_CAP, **limits})
    message = str(caught.value)
    assert "\n" not in message and len(message) < 250 + len(str(archive)), message
    assert tree(tmp_path) == before
    return message


def deep_name(depth):
    return "/".join(["d"] * (depth - 1) + ["leaf.txt"])


def test_deep_archive_is_refused_in_one_line_and_a_later_extraction_works(tmp_path):
    archive = write_tar(tmp_path / "deep.tgz", [tar_member("ok.txt", b"x"), tar_member(deep_name(1500), b"x")])
    message = assert_refused(archive, tmp_path, r"1500 levels deep, more than 32 \(download.max_depth\)")
    assert f"({len(deep_name(1500))} characters)" in message  # the name is cut short, its length given
    extract(good_tar(tmp_path / "good.tgz", "w:gz"), tmp_path / "raw", max_bytes=SMALL_CAP)
    assert sorted(os.listdir(tmp_path / "raw")) == ["LICENSE.txt", "flowers"]


def test_an_archive_as_deep_as_allowed_unpacks_and_is_replaced_later(tmp_path):
    archive = write_tar(tmp_path / "deep.tar", [tar_member(deep_name(400), b"x")], "w")
    extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP, max_depth=400)
    assert os.path.isfile(os.path.join(tmp_path, "raw", *deep_name(400).split("/")))
    extract(good_tar(tmp_path / "good.tgz", "w:gz"), tmp_path / "raw", max_bytes=SMALL_CAP)
    assert sorted(os.listdir(tmp_path / "raw")) == ["LICENSE.txt", "flowers"]
    assert sorted(os.listdir(tmp_path)) == ["deep.tar", "good.tgz", "raw"]


STREAM_MIB = 16
COMPRESSORS = {"tar.gz": (gzip.compress, 64), "tar.bz2": (bz2.compress, 2048), "tar.xz": (lzma.compress, 256)}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_compressed_bomb_is_refused_at_its_header_within_seconds(tmp_path, kind):
    # One member of zeros, up to 32 GiB, from one small compressed stream repeated
    # (a reader takes concatenated streams as one): decompressing it all takes minutes.
    compress, repeats = COMPRESSORS[kind]
    size = repeats * STREAM_MIB << 20
    header = tarfile.TarInfo("zeros.bin")
    header.size = size
    zeros = compress(bytes(STREAM_MIB << 20))
    archive = tmp_path / "bomb.bin"
    with open(archive, "wb") as out:
        out.write(compress(header.tobuf(tarfile.GNU_FORMAT)))
        out.writelines([zeros] * repeats)
        out.write(compress(bytes(2 * tarfile.BLOCKSIZE)))
    assert os.path.getsize(archive) < 2_000_000
    started = time.monotonic()
    message = assert_refused(archive, tmp_path, "unpacks to more than", max_bytes=100_000_000)
    assert time.monotonic() - started < 2, message


def extended_header(kind, contents):
    """A raw tar header of ``kind`` (pax "x", GNU long name "L") with its contents, padded to blocks."""
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.type, info.size = kind, len(contents)
    padding = -len(contents) % tarfile.BLOCKSIZE
    return info.tobuf(tarfile.GNU_FORMAT) + contents + bytes(padding)


def raw_tar(*parts, end=True):
    """Raw tar bytes: ``parts`` (bytes), then a small file and the end marker."""
    info, data = tar_member("c/x.txt", b"x")
    last = info.tobuf(tarfile.GNU_FORMAT) + data.read().ljust(tarfile.BLOCKSIZE, b"\0")
    return b"".join(parts) + last + (bytes(2 * tarfile.BLOCKSIZE) if end else b"")


def test_huge_extended_header_is_refused_before_it_is_read_into_memory(tmp_path):
    size = 64 << 20
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, size
    archive = tmp_path / "long.tar.bz2"
    archive.write_bytes(bz2.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(size) + raw_tar()))
    assert_refused(archive, tmp_path, f"a tar extended header of {size} bytes")


def test_pax_header_made_to_backtrack_is_refused_at_once(tmp_path):
    # CVE-2024-6232: Python < 3.11.10 takes minutes over a long run of digits in a pax header.
    archive = tmp_path / "redos.tar"
    archive.write_bytes(raw_tar(extended_header(tarfile.XHDTYPE, b"1" * 200_000)))
    started = time.monotonic()
    assert_refused(archive, tmp_path, "run of over 64 digits")
    assert time.monotonic() - started < 2


def test_chain_of_extended_headers_is_refused_in_one_line(tmp_path):
    # tarfile follows a chain of long-name headers by recursion.
    archive = tmp_path / "chain.tgz"
    archive.write_bytes(gzip.compress(raw_tar(*[extended_header(tarfile.GNUTYPE_LONGNAME, b"a" * 10)] * 3000)))
    assert_refused(archive, tmp_path, "a chain of thousands of extended headers")


@pytest.mark.parametrize("form", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_in_pax_and_gnu_headers_unpack(tmp_path, form):
    name = "/".join(["n" * 150, "m" * 150, "photo 12345678901234567890.jpg"])
    archive = tmp_path / "long.tgz"
    with tarfile.open(archive, "w:gz", format=form) as tar:
        info, data = tar_member(name, b"image", pax_headers={"comment": "caf\u00e9 " * 40})
        tar.addfile(info, data)
    assert extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP) == [name]


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_too_many_members_are_refused(tmp_path, kind):
    names = {f"c/{number}.txt": b"" for number in range(60)}
    if kind == "zip":
        archive = write_zip(tmp_path / "many.zip", names)
    else:
        archive = write_tar(tmp_path / "many.tgz", [tar_member(name, data) for name, data in names.items()])
    assert_refused(archive, tmp_path, r"holds more than 50 members \(download.max_members\)$", max_members=50)
    assert len(extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP, max_members=61)) == 60  # 60 + folder


def test_zip_count_is_checked_before_its_directory_is_read(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "many.zip", {f"{number}.txt": b"" for number in range(60)})
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: pytest.fail("directory was read"))
    assert_refused(archive, tmp_path, "holds more than 50 members", max_members=50)


def members_then_cut(cut):
    """A tar of two files, and the uncompressed offset just after the first file's data (cut)."""
    members = [tar_member("a/one.txt", b"1" * 700), tar_member("b/two.txt", b"2" * 10)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, data)
    data = buffer.getvalue()
    return data[:cut] if cut is not None else data


@pytest.mark.parametrize("kind, cut", [
    ("tar", 512 + 1024),  # at a member boundary: a shorter, valid-looking archive
    ("tar", 512 + 1024 + 512 + 512),  # after the last member, before the marker
    ("tar", 512 + 1024 + 512 + 512 + 512),  # one zero block of the two
    ("tar.gz", 512 + 1024),
])
def test_tar_without_its_end_marker_is_refused(tmp_path, kind, cut):
    data = members_then_cut(cut)
    archive = tmp_path / "cut.bin"
    archive.write_bytes(gzip.compress(data) if kind == "tar.gz" else data)
    assert_refused(archive, tmp_path, "no end-of-archive marker")


def test_tar_with_damage_after_a_member_is_refused(tmp_path):
    data = bytearray(members_then_cut(None))
    data[512 + 1024:512 + 1024 + 512] = b"\xff" * 512  # the second header, garbage
    archive = tmp_path / "damaged.tar"
    archive.write_bytes(bytes(data))
    assert_refused(archive, tmp_path, "no end-of-archive marker|cannot unpack")


def test_compressed_tar_cut_after_its_end_marker_is_refused(tmp_path):
    archive = good_tar(tmp_path / "a.tgz", "w:gz")
    archive.write_bytes(archive.read_bytes()[:-4])  # the gzip trailer's size field
    assert_refused(archive, tmp_path, "cannot unpack this tar.gz archive, truncated or corrupt")


def test_duplicate_member_with_the_same_contents_is_kept_once(tmp_path):
    archive = write_tar(tmp_path / "dup.tgz", [tar_member("c/x.jpg", b"same"), tar_member("c/./x.jpg", b"same")])
    assert extract(archive, tmp_path / "raw", max_bytes=SMALL_CAP) == ["c/x.jpg"]
    assert (tmp_path / "raw" / "c" / "x.jpg").read_bytes() == b"same"


@pytest.mark.parametrize("members, reason", [
    ([("c/x.jpg", b"first"), ("c/x.jpg", b"second")], "twice, with different contents"),
    ([("c", b"a file"), ("c/x.jpg", b"x")], "'c' is a file earlier in the archive"),
    ([("c/x.jpg", b"x"), ("c", b"a file")], "a folder of this name is earlier"),
])
def test_clashing_members_are_refused(tmp_path, members, reason):
    archive = write_tar(tmp_path / "clash.tgz", [tar_member(name, data) for name, data in members])
    assert_refused(archive, tmp_path, reason)


def test_zip_with_a_name_twice_and_different_contents_is_refused(tmp_path):
    archive = tmp_path / "dup.zip"
    write_zip(archive, {"c/x.jpg": b"first"})
    with zipfile.ZipFile(archive, "a") as handle, pytest.warns(UserWarning, match="Duplicate name"):
        handle.writestr("c/x.jpg", b"second")
    assert_refused(archive, tmp_path, "twice, with different contents")


@pytest.mark.parametrize("name, reason", [
    ("x" * 4249, "a name in its path is 4249 bytes long, more than 255"),
    ("/".join(["y" * 200] * 6), "its path is 1205 bytes long, more than 1024"),
])
def test_over_long_names_are_refused_briefly(tmp_path, name, reason):
    archive = write_tar(tmp_path / "long.tar", [tar_member(name, b"x")], "w")
    message = assert_refused(archive, tmp_path, reason)
    assert f"({len(name)} characters)" in message


def test_path_too_long_for_the_target_is_named_as_such(tmp_path):
    # Each name and the whole member path are within the caps; the target's own path is long.
    # Long enough, wherever tmp_path is, that target + member pass the system's 4096-byte limit.
    levels = -(-(3300 - len(str(tmp_path))) // 251)
    target = os.path.join(str(tmp_path), *["t" * 250] * levels, "raw")
    os.makedirs(os.path.dirname(target))
    archive = write_tar(tmp_path / "a.tgz", [tar_member("/".join(["m" * 200] * 5), b"x")])
    with pytest.raises(PipelineError, match="a member's path is too long for the file system under"):
        extract(archive, target, max_bytes=SMALL_CAP)
    assert os.listdir(os.path.dirname(target)) == []


def test_disk_full_is_not_reported_as_a_corrupt_archive(tmp_path, monkeypatch):
    def full(path):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(archive_module, "create_file", full)
    with pytest.raises(OSError) as caught:
        extract(good_tar(tmp_path / "a.tgz", "w:gz"), tmp_path / "raw", max_bytes=SMALL_CAP)
    assert caught.value.errno == 28
    assert sorted(os.listdir(tmp_path)) == ["a.tgz"]


def run_cli(*args):
    # The rule always passes every cap; a test's own value comes last and wins.
    caps = ["--max-bytes", "10000000000", "--max-members", "100000", "--max-depth", "32"]
    return subprocess.run([sys.executable, "-m", "scripts.data.archive", *caps, *args],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_exits_1_with_an_error_line(tmp_path):
    archive = write_tar(tmp_path / "evil.tgz", [tar_member("../evil", b"x")])
    result = run_cli("--archive", str(archive), "--output", str(tmp_path / "raw"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "'../evil'" in result.stderr
    assert not (tmp_path / "raw").exists()


def test_cli_unpacks_a_good_archive(tmp_path):
    archive = GOOD_ARCHIVES["zip"](tmp_path / "good.zip")
    result = run_cli("--archive", str(archive), "--output", str(tmp_path / "raw"),
                     "--max-bytes", str(SMALL_CAP), "--max-members", "10", "--max-depth", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"unpacked {len(CONTENTS)} files into {tmp_path / 'raw'}"
    assert (tmp_path / "raw" / "LICENSE.txt").read_bytes() == CONTENTS["LICENSE.txt"]


def test_cli_passes_the_depth_cap(tmp_path):
    archive = GOOD_ARCHIVES["zip"](tmp_path / "good.zip")
    result = run_cli("--archive", str(archive), "--output", str(tmp_path / "raw"), "--max-depth", "2")
    assert result.returncode == 1 and "more than 2 (download.max_depth)" in result.stderr
    assert result.stderr.count("\n") == 1

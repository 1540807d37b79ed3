"""Reading bundle files: every cap applies before the bytes are read, odd files are refused.

Memory figures are measured in a fresh interpreter (peak RSS from `resource.getrusage`), so
what earlier tests allocated cannot hide a regression.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.bundle_files import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_HEADER_BYTES,
    build_archive,
    read_bundle_files,
)
from pdp.errors import BundleError

from .support import DOCS_BUNDLE

MIB = 1024 * 1024
_MEASURE = """
import json, resource, sys
from pathlib import Path
from pdp.bundle_files import read_bundle_files
from pdp.errors import BundleError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_bundle_files(Path(sys.argv[1]))
    message = None
except BundleError as exc:
    message = exc.message
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "message": message}))
"""


def peak_growth(path: Path) -> tuple[int, str | None]:
    """Peak RSS growth (bytes) of reading `path` in a fresh process, and the refusal."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    print(f"{path.name}: peak RSS grew {result['growth_kib'] / 1024:.1f} MiB")
    return result["growth_kib"] * 1024, result["message"]


def refusal(path: Path, **kwargs: object) -> str:
    with pytest.raises(BundleError) as err:
        read_bundle_files(path, **kwargs)  # type: ignore[arg-type]
    return err.value.message


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def test_a_huge_pax_header_is_refused_before_tarfile_reads_it(tmp_path: Path) -> None:
    size = 128 * MIB  # compresses to a few hundred KB
    archive = tmp_path / "pax.tar.gz"
    with gzip.open(archive, "wb", compresslevel=1) as gz:
        gz.write(header("././@PaxHeader", size, tarfile.XHDTYPE))
        record_head = f"{size} comment=".encode()
        gz.write(record_head)
        left = size - len(record_head) - 1
        while left:
            gz.write(b"a" * min(MIB, left))
            left -= min(MIB, left)
        gz.write(padded(b"\n" + bytes(len(record_head))))
        gz.write(header("manifest.json", 2) + padded(b"{}") + bytes(1024))
    assert archive.stat().st_size < 2 * MIB
    growth, message = peak_growth(archive)
    assert message is not None and f"archive header exceeds {MAX_HEADER_BYTES} bytes" in message
    assert growth < 32 * MIB  # the header alone is 128 MiB


def test_a_huge_archive_member_is_refused_by_its_header(tmp_path: Path) -> None:
    archive = tmp_path / "big.tar.gz"
    with gzip.open(archive, "wb", compresslevel=1) as gz:
        gz.write(header("rules/big.cedar", MAX_FILE_BYTES + 1))  # data never follows
    assert f"rules/big.cedar: file exceeds {MAX_FILE_BYTES} bytes" in refusal(archive)


def test_a_sparse_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    bundle = tmp_path / "sparse"
    bundle.mkdir()
    with (bundle / "huge.cedar").open("wb") as f:
        f.truncate(1200 * MIB)  # 1.2 GB that occupies no disk
    growth, message = peak_growth(bundle)
    assert message is not None and f"huge.cedar: file exceeds {MAX_FILE_BYTES} bytes" in message
    assert growth < 32 * MIB


def test_the_number_of_files_is_capped(tmp_path: Path) -> None:
    bundle = tmp_path / "many"
    bundle.mkdir()
    for i in range(MAX_FILES + 1):
        (bundle / f"{i:05}.cedar").write_bytes(b"")
    assert f"bundle exceeds {MAX_FILES} files" in refusal(bundle)


def test_duplicate_archive_members_are_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in (("./a.cedar", b"// one\n"), ("a.cedar", b"// two\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    archive = tmp_path / "dup.tar.gz"
    archive.write_bytes(gzip.compress(raw.getvalue()))
    assert "a.cedar: duplicate archive member a.cedar" in refusal(archive)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    copy = tmp_path / "docs"
    copy.mkdir()
    for name, data in read_bundle_files(DOCS_BUNDLE).files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    return copy


def test_a_symlink_out_of_the_bundle_is_refused_and_named(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.cedar").write_text("permit(principal, action, resource);\n")
    (bundle / "rules" / "escape.cedar").symlink_to(tmp_path / "elsewhere.cedar")
    (bundle / "mem.cedar").symlink_to("/proc/self/mem")
    message = refusal(bundle)
    assert "rules/escape.cedar: symlink resolves outside the bundle" in message
    assert "mem.cedar: symlink resolves outside the bundle: /proc/" in message
    (bundle / "mem.cedar").unlink()
    followed = read_bundle_files(bundle, follow_symlinks=True)  # the setting allows it
    assert followed.files["rules/escape.cedar"].startswith(b"permit")


def test_a_symlink_inside_the_bundle_is_read(bundle: Path) -> None:
    (bundle / "rules" / "alias.json").symlink_to("../entities.json")
    files = read_bundle_files(bundle).files
    assert files["rules/alias.json"] == files["entities.json"]


def test_special_files_are_refused_even_when_following_links(bundle: Path) -> None:
    os.mkfifo(bundle / "rules" / "pipe.cedar")
    (bundle / "mem.cedar").symlink_to("/proc/self/mem")
    (bundle / "null.cedar").symlink_to("/dev/null")
    message = refusal(bundle, follow_symlinks=True)
    assert "rules/pipe.cedar: a FIFO, refused" in message
    assert "mem.cedar: a file of a pseudo file system (/proc, /sys), refused" in message
    assert "null.cedar: a character device, refused" in message


def test_a_symlink_loop_is_refused(bundle: Path) -> None:
    (bundle / "rules" / "again").symlink_to("..")
    assert "rules/again: symlink loop" in refusal(bundle)


def test_a_bundle_linked_into_a_bundles_dir_from_outside_is_refused(
    bundle: Path, tmp_path: Path
) -> None:
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "acme").symlink_to(bundle)
    assert "symlink resolves outside" in refusal(tenants / "acme", within=tenants)
    assert read_bundle_files(tenants / "acme", within=tenants, follow_symlinks=True).files
    # A bundle given by its own path may be a symlink: a ConfigMap's `..data` swap.
    assert read_bundle_files(tenants / "acme").files


def test_an_archive_round_trips(bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "docs.tar.gz"
    archive.write_bytes(build_archive(read_bundle_files(bundle)))
    assert read_bundle_files(archive).files == read_bundle_files(bundle).files


_NAMES = ["a.cedar", "./a.cedar", "b/c.cedar", "b/./c.cedar", "./b/c.cedar", ".hidden.cedar"]


def test_archive_members_are_read_once_by_normalised_name_or_refused() -> None:
    """For any member list: distinct normalised names are all read, any repeat is refused."""
    reached: Counter[str] = Counter()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(_NAMES), st.binary(max_size=8)), max_size=5))
    def check(members: list[tuple[str, bytes]]) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        visible = [(str(Path(n)), d) for n, d in members if not Path(n).name.startswith(".")]
        with TemporaryDirectory() as tmp:
            archive = Path(tmp) / "b.tar.gz"
            archive.write_bytes(gzip.compress(raw.getvalue()))
            if len({n for n, _ in visible}) < len(visible):
                reached["duplicate"] += 1
                assert "duplicate archive member" in refusal(archive)
            else:
                reached["distinct" if visible else "empty"] += 1
                assert dict(read_bundle_files(archive).files) == dict(visible)

    check()
    print(f"archive member lists: {dict(reached)}")
    assert reached["duplicate"] >= 20 and reached["distinct"] >= 20, reached

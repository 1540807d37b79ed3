"""Read a bundle's files from a directory or a `.tar.gz`, digest them, archive them.

A bundle is only ever read through `BundleFiles`, so the compiler never touches
the file system and both forms are handled the same. Every read is capped before
the bytes are read (sizes by `fstat`, archive headers before `tarfile` parses
them), so a hostile bundle (a gzip bomb, a sparse file, a huge PAX header, a link
to `/proc`) is refused at a cost bounded by the caps, not by what it claims.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pdp.errors import BundleError, BundleProblem

MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # total of all files, uncompressed
MAX_FILE_BYTES = 16 * 1024 * 1024  # one file
MAX_FILES = 10_000  # files in one bundle
MAX_HEADER_BYTES = 64 * 1024  # one PAX or GNU long-name header (tarfile reads it whole)
MAX_ARCHIVE_ENTRIES = 4 * MAX_FILES  # tar records of any kind: files, dirs, headers
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
PSEUDO_FILESYSTEMS = ("/proc", "/sys")  # files whose size says nothing about their content
# A bundle's signature (`pdp.signing`): read with the bundle, left out of its digest, which
# is what it signs. Every other file counts, so adding one is a change like any other.
SIGNATURE_FILE = "signature.json"
_BLOCK = tarfile.BLOCKSIZE
_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


@dataclass(frozen=True)
class BundleFiles:
    source: str  # where the files came from, for messages
    files: Mapping[str, bytes]  # POSIX relative path -> content

    @property
    def digest(self) -> str:
        """sha256 over every path and content but the signature's, independent of order
        and mtimes."""
        h = hashlib.sha256()
        for path in sorted(self.files.keys() - {SIGNATURE_FILE}):
            data = self.files[path]
            h.update(f"{path}\0{len(data)}\0".encode())
            h.update(data)
        return f"sha256:{h.hexdigest()}"

    def text(self, path: str) -> str:
        try:
            return self.files[path].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(
                self.source, [BundleProblem(path, f"not valid UTF-8 (byte {exc.start})")]
            ) from exc


def read_bundle_files(
    path: Path, *, follow_symlinks: bool = False, within: Path | None = None
) -> BundleFiles:
    """The files of the bundle at `path`. Symlinks that resolve outside the bundle (or, for
    `path` itself, outside `within`, e.g. the bundles directory) are refused unless
    `follow_symlinks`; `path` itself may be a symlink (a ConfigMap's `..data` swap)."""
    if within is not None and not follow_symlinks and path.is_symlink():
        target = os.path.realpath(path)
        if not _inside(target, os.path.realpath(within)):
            problem = BundleProblem(str(path), f"symlink resolves outside {within}: {target}")
            raise BundleError(str(path), [problem])
    if path.is_dir():
        return _Walk(path, follow_symlinks).run()
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return _read_archive(path)
    what = "does not exist" if not path.exists() else "is neither a directory nor a .tar.gz"
    raise BundleError(str(path), [BundleProblem(str(path), what)])


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip("/") + "/")


def _is_hidden(rel: PurePosixPath) -> bool:
    # Editors and VCS leave dotfiles (swap files, .git): never part of a bundle.
    return any(part.startswith(".") for part in rel.parts)


def _pseudo_devices() -> set[int]:
    devices = set()
    for mount in PSEUDO_FILESYSTEMS:
        try:
            devices.add(os.stat(mount).st_dev)
        except OSError:
            pass
    return devices


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


@dataclass
class _Walk:
    """One read of a bundle directory, collecting every problem before refusing it."""

    root: Path
    follow_symlinks: bool
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[BundleProblem] = field(default_factory=list)
    total: int = 0
    pseudo: set[int] = field(default_factory=_pseudo_devices)

    entries: int = 0

    def run(self) -> BundleFiles:
        real_root = os.path.realpath(self.root)
        try:
            self._dir(real_root, PurePosixPath(), real_root, {real_root})
        except _Full as full:
            self.problems.append(full.problem)
        if self.problems:
            raise BundleError(str(self.root), self.problems)
        return BundleFiles(str(self.root), self.files)

    def _dir(self, real: str, rel: PurePosixPath, real_root: str, ancestors: set[str]) -> None:
        listed: list[os.DirEntry[str]] = []
        try:
            with os.scandir(real) as it:
                for entry in it:
                    self.entries += 1
                    if self.entries > MAX_ARCHIVE_ENTRIES:
                        raise _Full(
                            str(rel / entry.name), f"bundle exceeds {MAX_ARCHIVE_ENTRIES} entries"
                        )
                    listed.append(entry)
        except OSError as exc:
            self.problems.append(BundleProblem(str(rel or "."), f"unreadable: {exc.strerror}"))
            return
        for entry in sorted(listed, key=lambda e: e.name):
            child = rel / entry.name
            if _is_hidden(child):
                continue
            target = entry.path
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not self.follow_symlinks and not _inside(target, real_root):
                        self._refuse(child, f"symlink resolves outside the bundle: {target}")
                        continue
                st = os.stat(target)
            except OSError as exc:  # vanished, dangling or looping link
                self._refuse(child, f"unreadable: {exc.strerror}")
                continue
            if stat.S_ISDIR(st.st_mode):
                if target in ancestors:
                    self._refuse(child, "symlink loop")
                else:
                    self._dir(target, child, real_root, ancestors | {target})
            else:
                self._file(target, child)

    def _refuse(self, rel: PurePosixPath, message: str) -> None:
        self.problems.append(BundleProblem(str(rel), message))

    def _file(self, path: str, rel: PurePosixPath) -> None:
        try:
            # O_NONBLOCK: a FIFO swapped in after the stat must not block the reader.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            self._refuse(rel, f"unreadable: {exc.strerror}")
            return
        try:
            st = os.fstat(fd)  # of what was opened, not of what the name pointed to earlier
            if not stat.S_ISREG(st.st_mode):
                self._refuse(rel, f"{_kind(st.st_mode)}, refused")
            elif st.st_dev in self.pseudo:
                self._refuse(rel, "a file of a pseudo file system (/proc, /sys), refused")
            elif self._capped(rel, st.st_size):
                data = _read_at_most(fd, min(MAX_FILE_BYTES, MAX_BUNDLE_BYTES - self.total) + 1)
                if self._capped(rel, len(data)):  # it grew since the fstat
                    self.total += len(data)
                    self.files[str(rel)] = data
        except OSError as exc:
            self._refuse(rel, f"unreadable: {exc.strerror}")
        finally:
            os.close(fd)

    def _capped(self, rel: PurePosixPath, size: int) -> bool:
        """True if a file of `size` bytes fits every cap; else records the problem."""
        if size > MAX_FILE_BYTES:
            self._refuse(rel, f"file exceeds {MAX_FILE_BYTES} bytes ({size})")
        elif self.total + size > MAX_BUNDLE_BYTES:
            raise _Full(str(rel), f"bundle exceeds {MAX_BUNDLE_BYTES} bytes")
        elif len(self.files) >= MAX_FILES:
            raise _Full(str(rel), f"bundle exceeds {MAX_FILES} files")
        else:
            return True
        return False


class _Full(Exception):
    """A whole-bundle cap is reached: stop walking (the rest cannot fit either)."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.problem = BundleProblem(file, message)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = os.read(fd, min(1024 * 1024, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_archive(path: Path) -> BundleFiles:
    files: dict[str, bytes] = {}
    problems: list[BundleProblem] = []
    try:
        stream = _bounded_tar_stream(path)
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
            for member in tar:
                rel = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if rel.is_absolute() or ".." in rel.parts or not member.isfile():
                    problems.append(BundleProblem(member.name, "unsafe archive member refused"))
                    continue
                rel = PurePosixPath(*[p for p in rel.parts if p != "."])
                if _is_hidden(rel):
                    continue
                if str(rel) in files:
                    problems.append(BundleProblem(member.name, f"duplicate archive member {rel}"))
                    continue
                # The header checks capped the stored size; a sparse member (GNU `S`, or
                # PAX GNU.sparse.*) extracts to the size it claims, holes and all.
                if member.issparse():
                    problems.append(BundleProblem(member.name, "sparse archive member refused"))
                    continue
                extracted = tar.extractfile(member)
                assert extracted is not None  # regular files always extract
                files[str(rel)] = extracted.read()
    except _Full as full:
        raise BundleError(str(path), [full.problem]) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        problem = BundleProblem(str(path), f"unreadable archive: {exc}")
        raise BundleError(str(path), [problem]) from exc
    if problems:
        raise BundleError(str(path), problems)
    return BundleFiles(str(path), files)


def _bounded_tar_stream(path: Path) -> bytes:
    """The decompressed tar stream up to its end-of-archive block, checking each record's
    header before reading its data: PAX/GNU headers (which tarfile would read whole) are
    capped at MAX_HEADER_BYTES, file data at the bundle caps, records at MAX_ARCHIVE_ENTRIES.
    Read once from one open file, so a rename mid-read cannot mix two archives."""
    chunks: list[bytes] = []
    total = files = 0
    with gzip.open(path, "rb") as gz:
        for _ in range(MAX_ARCHIVE_ENTRIES + 1):
            header = gz.read(_BLOCK)
            chunks.append(header)
            if len(header) < _BLOCK or header == bytes(_BLOCK):
                return b"".join(chunks)  # end of archive (or truncated: tarfile says so)
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            size = _header_size(header, name)
            kind = header[156:157]
            if kind in _HEADER_TYPES and size > MAX_HEADER_BYTES:
                raise _Full(name, f"archive header exceeds {MAX_HEADER_BYTES} bytes ({size})")
            if kind in tarfile.REGULAR_TYPES:
                files += 1
                if size > MAX_FILE_BYTES:
                    raise _Full(name, f"file exceeds {MAX_FILE_BYTES} bytes ({size})")
            total += size
            if total > MAX_BUNDLE_BYTES:
                raise _Full(name, f"bundle exceeds {MAX_BUNDLE_BYTES} bytes")
            if files > MAX_FILES:
                raise _Full(name, f"bundle exceeds {MAX_FILES} files")
            padded = -(-size // _BLOCK) * _BLOCK
            data = gz.read(padded)
            chunks.append(data)
            if len(data) < padded:
                return b"".join(chunks)
    raise _Full(str(path), f"archive exceeds {MAX_ARCHIVE_ENTRIES} entries")


def _header_size(header: bytes, name: str) -> int:
    field_ = header[124:136]
    if field_[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field_[1:], "big")
    digits = field_.split(b"\0", 1)[0].strip() or b"0"
    try:
        return int(digits, 8)
    except ValueError:
        raise _Full(name, f"corrupt archive header (size {digits!r})") from None


def build_archive(bundle: BundleFiles) -> bytes:
    """A reproducible .tar.gz: sorted members, fixed mtimes, owners and modes."""
    out = io.BytesIO()
    # mtime=0 and no file name keep the gzip header byte-identical across runs.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(reproducible_tar(bundle.files))
    return out.getvalue()


def reproducible_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed tar of `files`: sorted members, fixed mtimes, owners and modes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            data = files[rel]
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()

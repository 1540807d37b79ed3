"""Read a bundle's files from a directory or a `.tar.gz`, digest them, archive them.

A bundle is only ever read through `BundleFiles`, so the compiler never touches
the file system and both forms are handled the same. Sizes are capped so that a
hostile archive (a gzip bomb, a huge file) is refused rather than exhausting memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pdp.errors import BundleError, BundleProblem

MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # total of all files, uncompressed
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class BundleFiles:
    source: str  # where the files came from, for messages
    files: Mapping[str, bytes]  # POSIX relative path -> content

    @property
    def digest(self) -> str:
        """sha256 over every path and content, independent of order and mtimes."""
        h = hashlib.sha256()
        for path in sorted(self.files):
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


def read_bundle_files(path: Path) -> BundleFiles:
    if path.is_dir():
        return _read_dir(path)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return _read_archive(path)
    what = "does not exist" if not path.exists() else "is neither a directory nor a .tar.gz"
    raise BundleError(str(path), [BundleProblem(str(path), what)])


def _is_hidden(rel: PurePosixPath) -> bool:
    # Editors and VCS leave dotfiles (swap files, .git): never part of a bundle.
    return any(part.startswith(".") for part in rel.parts)


def _read_dir(root: Path) -> BundleFiles:
    files: dict[str, bytes] = {}
    total = 0
    for p in sorted(root.rglob("*")):
        rel = PurePosixPath(p.relative_to(root).as_posix())
        if _is_hidden(rel) or not p.is_file():
            continue
        data = p.read_bytes()
        total += len(data)
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(
                str(root), [BundleProblem(str(rel), f"bundle exceeds {MAX_BUNDLE_BYTES} bytes")]
            )
        files[str(rel)] = data
    return BundleFiles(str(root), files)


def _read_archive(path: Path) -> BundleFiles:
    files: dict[str, bytes] = {}
    total = 0
    problems: list[BundleProblem] = []
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                rel = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if rel.is_absolute() or ".." in rel.parts or not member.isfile():
                    problems.append(BundleProblem(member.name, "unsafe archive member refused"))
                    continue
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(
                        str(path),
                        [BundleProblem(member.name, f"bundle exceeds {MAX_BUNDLE_BYTES} bytes")],
                    )
                rel = PurePosixPath(*[p for p in rel.parts if p != "."])
                if _is_hidden(rel):
                    continue
                extracted = tar.extractfile(member)
                assert extracted is not None  # regular files always extract
                files[str(rel)] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        problem = BundleProblem(str(path), f"unreadable archive: {exc}")
        raise BundleError(str(path), [problem]) from exc
    if problems:
        raise BundleError(str(path), problems)
    return BundleFiles(str(path), files)


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

"""Rebuild service/tests/testdata/cedar-conformance.tar.xz from ../shared/conformance/.

The archive holds only what service/tests/test_conformance.py reads: every hand-written
test file (`cedar/tests/*/*.json`) and every corpus test file (`cedar-corpus/corpus-tests/
*.json`), the policies, schema and entities each one names, and each folder's LICENSE,
NOTICE and README.md (where the data comes from). Paths inside the archive are those under
`conformance/`, so a test file's relative paths resolve against its folder as upstream.

Reproducible: members in sorted order, fixed mtime/owner/mode, one xz preset, no
multi-threaded compression, so the same input gives the same bytes (`--check` verifies
that the checked-in archive is what this script builds).

    .venv/bin/python scripts/build_conformance_archive.py [--source ../shared/conformance] [--check]
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

from pdp.bundle_files import reproducible_tar

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "conformance"
ARCHIVE = ROOT / "service" / "tests" / "testdata" / "cedar-conformance.tar.xz"
# (folder, glob of its test files); a file ending in .entities.json is data, not a test.
SUITES = (("cedar", "tests/*/*.json"), ("cedar-corpus", "corpus-tests/*.json"))
PROVENANCE = ("LICENSE", "NOTICE", "README.md")


def members(source: Path) -> list[str]:
    """Every path (relative to `source`) the archive must hold, sorted."""
    names: set[str] = set()
    for folder, pattern in SUITES:
        root = source / folder
        for name in PROVENANCE:
            if not (root / name).is_file():
                raise SystemExit(f"{root / name}: missing (the licence travels with the data)")
            names.add(f"{folder}/{name}")
        for test in root.glob(pattern):
            if test.name.endswith(".entities.json"):
                continue
            data = json.loads(test.read_text(encoding="utf-8"))
            names.add(f"{folder}/{test.relative_to(root).as_posix()}")
            for key in ("policies", "schema", "entities"):
                names.add(f"{folder}/{data[key]}")
    missing = sorted(n for n in names if not (source / n).is_file())
    if missing:
        raise SystemExit(f"named by a test file but missing: {', '.join(missing[:5])}")
    return sorted(names)


def build(source: Path) -> bytes:
    tar = reproducible_tar({name: (source / name).read_bytes() for name in members(source)})
    # One xz stream, fixed preset, single-threaded: same tar, same bytes.
    return lzma.compress(tar, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=ARCHIVE)
    parser.add_argument("--check", action="store_true", help="fail if --output differs")
    args = parser.parse_args(argv)
    data = build(args.source)
    if args.check:
        if not args.output.is_file() or args.output.read_bytes() != data:
            print(f"{args.output}: stale; rerun without --check", file=sys.stderr)
            return 1
        print(f"{args.output}: up to date ({len(data):,} bytes)")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"{args.output}: {len(data):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

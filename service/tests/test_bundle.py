"""Bundle loading: every problem located, nothing half-loaded, reproducible archives."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from pdp.bundle import compile_bundle, json_list_lines, load_bundle
from pdp.bundle_files import BundleFiles, build_archive, read_bundle_files
from pdp.errors import BundleError

from .support import DOCS_BUNDLE


def problems_of(files: dict[str, bytes]) -> list[str]:
    base = read_bundle_files(DOCS_BUNDLE).files
    with pytest.raises(BundleError) as err:
        compile_bundle(BundleFiles("test", {**base, **files}))
    return [str(p) for p in err.value.problems]


def test_docs_bundle_loads_with_sources_and_version() -> None:
    b = load_bundle(DOCS_BUNDLE)
    assert (b.version.name, b.version.version) == ("docs", "1.0.0")
    by_id = {s.policy_id: s for s in b.policies.values()}
    assert by_id["read-public"].file == "rules/read.cedar" and by_id["read-public"].line == 2
    assert by_id["org-boundary"].effect == "forbid"
    assert by_id["share"].is_template
    link = by_id["share-doc2-with-bob"]
    assert (link.template_id, link.file, link.line) == ("share", "links.json", 1)


def test_parse_errors_name_file_and_line_and_all_are_reported() -> None:
    found = problems_of(
        {
            "rules/bad.cedar": b'@id("ok")\npermit(principal, action, resource);\n\npermit(principal, action, resource) when { 1 + };\n',
            "z/worse.cedar": b"\n\nforbid(principal, action resource);\n",
        }
    )
    assert len(found) == 2
    assert found[0].startswith("rules/bad.cedar:4: parse error")
    assert found[1].startswith("z/worse.cedar:3: parse error")


def test_validation_errors_name_file_line_and_policy_id() -> None:
    [p] = problems_of(
        {
            "rules/typo.cedar": b'\n@id("typo")\npermit(principal, action, resource) when { principal.levl > 1 };\n'
        }
    )
    assert p.startswith("rules/typo.cedar:2 [typo]: ") and "levl" in p


def test_validation_off_accepts_what_strict_refuses() -> None:
    typo = {"rules/typo.cedar": b"permit(principal, action, resource) when { principal.levl > 1 };"}
    assert problems_of(typo)
    base = read_bundle_files(DOCS_BUNDLE).files
    manifest = json.dumps({"name": "docs", "version": "1", "validation": "off"}).encode()
    b = compile_bundle(BundleFiles("t", {**base, **typo, "manifest.json": manifest}))
    assert b.manifest.validation == "off"


def test_duplicate_ids_manifest_schema_entities_links() -> None:
    found = problems_of(
        {
            "manifest.json": b'{"name": "", "version": "1", "colour": "red"}',
            "rules/dup.cedar": b'@id("org-boundary")\nforbid(principal, action, resource);\n',
        }
    )
    assert any(p.startswith("manifest.json: name:") for p in found)
    assert any(p.startswith("manifest.json: colour: Extra inputs") for p in found)
    found = problems_of(
        {"rules/dup.cedar": b'@id("org-boundary")\nforbid(principal, action, resource);\n'}
    )
    assert found == [
        "rules/guard.cedar:7 [org-boundary]: duplicate policy id (first at rules/dup.cedar:1)"
    ]
    assert problems_of({"schema.cedarschema": b"entity User { a: Strin };"}) == [
        "schema.cedarschema: invalid schema: failed to resolve type: Strin"
    ]
    ents = b'[\n  {"uid": {"type": "Org", "id": "a"}, "attrs": {}, "parents": []},\n  {"uid": {"type": "User", "id": "x"}, "attrs": {"level": "high"}, "parents": []}\n]'
    [p] = problems_of({"entities.json": ents})
    assert p.startswith('entities.json:3: {"type": "User", "id": "x"}:')
    links = b'[{"template_id": "nope", "new_id": "l1", "values": {}}, {"template_id": "share", "new_id": "read-public", "values": {}}]'
    assert problems_of({"links.json": links}) == [
        "links.json:1: [0]: no template 'nope'",
        "links.json:1: [1]: id 'read-public' already used",
    ]


def test_missing_pieces() -> None:
    with pytest.raises(BundleError) as err:
        compile_bundle(BundleFiles("empty", {}))
    assert [str(p) for p in err.value.problems] == [
        "manifest.json: missing: a bundle needs a name and a version",
        "schema.cedarschema: schema missing",
    ]
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(Path("/no/such/bundle"))


def test_archive_is_reproducible_and_loads_the_same(tmp_path: Path) -> None:
    files = read_bundle_files(DOCS_BUNDLE)
    first, second = build_archive(files), build_archive(files)
    assert first == second
    copy = tmp_path / "copy"
    shutil.copytree(DOCS_BUNDLE, copy)
    (copy / "manifest.json").touch()  # mtimes do not matter
    assert build_archive(read_bundle_files(copy)) == first
    path = tmp_path / "docs.tar.gz"
    path.write_bytes(first)
    from_archive = load_bundle(path)
    assert from_archive.version == load_bundle(DOCS_BUNDLE).version  # same digest


def test_unsafe_archive_members_are_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.cedar")
        info.size = 1
        tar.addfile(info, io.BytesIO(b";"))
        link = tarfile.TarInfo("link.cedar")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(raw.getvalue())
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert sorted(p.file for p in err.value.problems) == ["../escape.cedar", "link.cedar"]


def test_hidden_files_are_not_part_of_a_bundle(tmp_path: Path) -> None:
    copy = tmp_path / "docs"
    shutil.copytree(DOCS_BUNDLE, copy)
    (copy / "rules" / ".read.cedar.swp").write_bytes(b"\x00garbage")
    assert load_bundle(copy).version == load_bundle(DOCS_BUNDLE).version


def test_json_list_lines_reports_where_each_element_starts() -> None:
    assert json_list_lines('[\n  {"a": 1},\n\n  2\n]') == [(2, {"a": 1}), (4, 2)]
    assert json_list_lines("  []") == []
    for bad in ('{"a": 1}', "[1, 2", "[1 2]"):
        with pytest.raises(ValueError):
            json_list_lines(bad)

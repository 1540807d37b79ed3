"""`pdp entities import` / `export`, run as the real command on real files, both backends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pdp.entity_store import open_store

from ..support import REPO, pdp_command

SEED = REPO / "policies" / "entities.json"


def pdp(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pdp_command(), "entities", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def where(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> list[str]:
    if backend == "sqlite":
        return ["--data-dir", str(tmp_path / "data")]
    return ["--store", request.getfixturevalue("postgres_url")]


def canonical(entities: list[dict[str, Any]]) -> list[str]:
    """Cedar's own reading of a list of entities, comparable whatever its JSON spelling."""
    import cedarpy

    parsed = json.loads(str(cedarpy.Entities.from_json_str(json.dumps(entities))))
    for e in parsed:  # parents are a set
        e["parents"] = sorted(e["parents"], key=lambda p: (p["type"], p["id"]))
    return sorted(json.dumps(e, sort_keys=True) for e in parsed)


def test_import_then_export_round_trips_the_bundle_seed_in_batches(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, tenant: str
) -> None:
    store_args = where(request, backend, tmp_path)
    done = pdp(
        "import",
        str(SEED),
        "--tenant",
        tenant,
        "--bundle",
        str(REPO / "policies"),
        "--batch-size",
        "10",
        *store_args,
    )
    seed = json.loads(SEED.read_text())
    assert done.returncode == 0, done.stderr
    assert f"imported {len(seed)} entities into tenant {tenant!r}" in done.stdout
    assert "entities/s" in done.stdout and "data version 5" in done.stdout  # 46 in 5 batches
    out = tmp_path / "export.json"
    exported = pdp("export", "--tenant", tenant, "-o", str(out), *store_args)
    assert exported.returncode == 0, exported.stderr
    assert f"exported {len(seed)} entities" in exported.stderr
    assert canonical(json.loads(out.read_text())) == canonical(seed)
    # The export is importable as it is (to stdout, then back in through stdin).
    again = pdp("export", "--tenant", tenant, *store_args)
    back = pdp(
        "import",
        "-",
        "--tenant",
        tenant + "-copy",
        "--bundle",
        str(REPO / "policies"),
        *store_args,
        stdin=again.stdout,
    )
    assert back.returncode == 0, back.stderr


def test_a_refused_entity_stops_the_import_at_its_batch_naming_it_in_the_file(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, tenant: str
) -> None:
    store_args = where(request, backend, tmp_path)
    seed = json.loads(SEED.read_text())
    bad = {"uid": {"type": "User", "id": "zz"}, "attrs": {}, "parents": []}
    path = tmp_path / "in.json"
    path.write_text(json.dumps([*seed[:12], bad, *seed[12:]]))
    done = pdp(
        "import",
        str(path),
        "--tenant",
        tenant,
        "--bundle",
        str(REPO / "policies"),
        "--batch-size",
        "5",
        *store_args,
    )
    assert done.returncode == 1
    assert f'{path}[12]: User::"zz": entity does not conform to the schema' in done.stderr
    assert "10 entities written before this batch (entities 10 to 14 not written)" in done.stderr
    url = None if backend == "sqlite" else store_args[1]
    store = open_store(url, tmp_path / "data")
    try:
        assert store.data_version(tenant) == 2
        assert len(list(store.export(tenant))) == 10
    finally:
        store.close()


def test_bad_usage_is_exit_2_naming_what(tmp_path: Path) -> None:
    missing = pdp("import", str(tmp_path / "nope.json"), "--data-dir", str(tmp_path))
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    (tmp_path / "obj.json").write_text("{}")
    notlist = pdp("import", str(tmp_path / "obj.json"), "--data-dir", str(tmp_path))
    assert notlist.returncode == 2 and "not a JSON list of entities" in notlist.stderr
    big = pdp("import", str(SEED), "--batch-size", "0", "--data-dir", str(tmp_path))
    assert big.returncode == 2 and "--batch-size must be from 1 to 10000" in big.stderr
    url = pdp("export", "--store", "mysql://x")
    assert url.returncode == 2 and "invalid setting entity_store_url" in url.stderr

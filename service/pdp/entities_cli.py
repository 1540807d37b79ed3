"""`pdp entities import FILE` / `pdp entities export`: the entity store in Cedar's JSON
entity format (a list of {"uid", "attrs", "parents"}).

Import writes in batches of `--batch-size` entities (default: `entity_write_max_entities`),
each batch one atomic write: a refused entity stops the import at its batch, the batches
before it stay written (they are whole), nothing of its batch is. Import parents before
children where you can: a parent arriving later recomputes its descendants' closure.
Entities are validated against the schema of the tenant's bundle: `--bundle`, else the
one `pdp serve` would serve the tenant with the same settings (`bundles` / `bundles_dir`,
or the built-in default bundle for tenant `default`); with none, a warning says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from pdp.config import Settings, load_settings
from pdp.entity_store import store_from_settings
from pdp.entity_store.api import EntityStore, Validator
from pdp.errors import EntityRejected, PdpError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any) -> None:
    entities = sub.add_parser("entities", help="import or export the entity store")
    esub = entities.add_subparsers(dest="entities_command", required=True)
    imp = esub.add_parser("import", help="write entities from a Cedar JSON file (- = stdin)")
    imp.add_argument("file")
    imp.add_argument("--batch-size", type=int, help="entities per atomic write")
    imp.add_argument("--bundle", type=Path, help="validate against this bundle's schema")
    imp.set_defaults(func=_import)
    exp = esub.add_parser("export", help="write every entity of a tenant as Cedar JSON")
    exp.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    exp.set_defaults(func=_export)
    for cmd in (imp, exp):
        cmd.add_argument("--tenant", default="default")
        cmd.add_argument("--store", help="entity_store_url: sqlite:///PATH or postgresql://...")
        cmd.add_argument("--data-dir", type=Path, help="where the SQLite store lives")
        cmd.add_argument("--config", type=Path, help="TOML settings file (as `pdp serve`)")


def _settings(args: argparse.Namespace) -> Settings | None:
    flags = {
        k: v
        for k, v in (("entity_store_url", args.store), ("data_dir", args.data_dir))
        if v is not None
    }
    try:
        return load_settings(flags, args.config)
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(x) for x in err["loc"]) or "settings"
            print(f"pdp: invalid setting {name}: {err['msg']}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"pdp: invalid config file {args.config}: {exc}", file=sys.stderr)
    return None


def _validator(args: argparse.Namespace, settings: Settings) -> Validator | None:
    from pdp.bundle import load_bundle
    from pdp.entity_store.validate import schema_validator

    path = args.bundle
    if path is None:  # the bundle `pdp serve` would serve this tenant with these settings
        source = settings.bundle_sources().scan().sources.get(args.tenant)
        path = source.path if source is not None else None
    if path is None:
        print(
            f"pdp: entities not validated against a schema: no bundle for tenant {args.tenant!r}",
            file=sys.stderr,
        )
        return None
    return schema_validator(load_bundle(Path(path)).schema)


def _import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    try:
        entities = _read(args.file)
    except (OSError, ValueError) as exc:
        print(f"pdp: {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    size = settings.entity_write_max_entities if args.batch_size is None else args.batch_size
    if not 1 <= size <= settings.entity_write_max_entities:
        print(
            f"pdp: --batch-size must be from 1 to {settings.entity_write_max_entities}"
            " (entity_write_max_entities)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    validate = _validator(args, settings)
    store = store_from_settings(settings)
    try:
        return _write_batches(store, args, entities, size, validate)
    finally:
        store.close()


def _write_batches(
    store: EntityStore,
    args: argparse.Namespace,
    entities: list[Any],
    size: int,
    validate: Validator | None,
) -> int:
    start = time.perf_counter()
    written, version = 0, store.data_version(args.tenant)
    for offset in range(0, len(entities), size):
        batch = entities[offset : offset + size]
        try:
            version = store.write(args.tenant, batch, [], validate)
        except EntityRejected as exc:
            where = (
                f"{args.file}[{offset + exc.index}]"
                if exc.index is not None
                else f"{args.file}[{offset}:{offset + len(batch)}]"
            )
            who = f"{exc.uid[0]}::{json.dumps(exc.uid[1])}: " if exc.uid else ""
            print(f"pdp: {where}: {who}{exc.cedar_reason}", file=sys.stderr)
            print(
                f"pdp: stopped: {written} entities written before this batch"
                f" (entities {offset} to {offset + len(batch) - 1} not written)",
                file=sys.stderr,
            )
            return EXIT_FAIL
        written += len(batch)
    seconds = time.perf_counter() - start
    rate = written / seconds if seconds > 0 else 0.0
    print(
        f"imported {written} entities into tenant {args.tenant!r} in {seconds:.2f} s"
        f" ({rate:,.0f} entities/s); data version {version}"
    )
    return EXIT_OK


def _read(name: str) -> list[Any]:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError("not a JSON list of entities")
    return value


def _export(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    store = store_from_settings(settings)
    try:
        if args.output is None:
            count = _write_json(store, args.tenant, sys.stdout)
        else:
            with args.output.open("w", encoding="utf-8") as out:
                count = _write_json(store, args.tenant, out)
    except PdpError as exc:
        print(f"pdp: {exc.message}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        store.close()
    print(f"exported {count} entities of tenant {args.tenant!r}", file=sys.stderr)
    return EXIT_OK


def _write_json(store: EntityStore, tenant: str, out: TextIO) -> int:
    """A JSON list, one entity a line, written as the store yields them (not held whole)."""
    count = 0
    out.write("[")
    for entity in store.export(tenant):
        out.write(",\n" if count else "\n")
        out.write(json.dumps(entity.to_cedar_json(), separators=(",", ":")))
        count += 1
    out.write("\n]\n")
    return count

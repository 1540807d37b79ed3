"""Compile a bundle's files into a `Bundle`: pre-parsed cedarpy handles plus metadata.

Layout of a bundle (a directory or a .tar.gz of one):

    manifest.json            {"name", "version", optional "validation", "validate_requests",
                             "forbid_errors", "authoritative_types", "request_entities"}
    schema.cedarschema       or schema.cedarschema.json (Cedar's JSON schema format)
    **/*.cedar               policies and templates, any depth, read in sorted path order
    entities.json            optional base entities (Cedar JSON, parsed with the schema)
    links.json               optional template links [{"template_id","new_id","values"}]

Every problem found is collected and reported together, each located as
file:line with the policy's id where Cedar gives enough to do so. A bundle
with any problem is refused whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cedarpy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pdp.bundle_files import BundleFiles, read_bundle_files
from pdp.errors import BundleError, BundleProblem
from pdp.model import BundleVersion
from pdp.policy_text import Statement, split_statements
from pdp.trust import RequestEntityRule, RequestTrust, compile_trust

MANIFEST = "manifest.json"
SCHEMA_FILES = ("schema.cedarschema", "schema.cedarschema.json")
ENTITIES = "entities.json"
LINKS = "links.json"
MAX_LOCATED = 10  # entity problems reported at most: enough to act on, bounded in size


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=200)
    description: str = ""
    # "off" is for stores whose policies cannot pass strict validation (AVP allows
    # this too); decisions are still deny-by-default.
    validation: Literal["strict", "off"] = "strict"
    # Validate each request (principal/resource types, context shape) against the schema.
    validate_requests: bool = True
    # Cedar skips a policy whose evaluation errors, so a `forbid` that errors (say, on a
    # missing attribute) lets the permits through. "deny" fails closed instead: an errored
    # forbid makes the decision Deny. "skip" is Cedar's own semantics, to the letter.
    forbid_errors: Literal["deny", "skip"] = "deny"
    # Entity types whose facts only the bundle defines; default: every type with an
    # entity in entities.json. A request may never supply one (see pdp.trust).
    authoritative_types: tuple[str, ...] | None = None
    # The entity types a request may supply, each with the parent types it may claim;
    # "trusted" is Cedar's model (the caller is trusted with every entity it sends), held
    # as None: a union type would name its members in every error's location.
    request_entities: dict[str, RequestEntityRule] | None = Field(default_factory=dict)

    @field_validator("request_entities", mode="before")
    @classmethod
    def _trusted(cls, value: Any) -> Any:
        if value == "trusted":
            return None
        if value is None or isinstance(value, str):  # never read `null` as "trusted"
            raise ValueError(
                'must be "trusted" or an object mapping entity types to {"parents": [...]}'
            )
        return value


class _EntityShape(BaseModel):
    """The shape of one Cedar JSON entity, checked only to explain Cedar's terse errors."""

    model_config = ConfigDict(extra="forbid")

    uid: dict[str, Any]
    attrs: dict[str, Any]
    parents: list[Any]
    tags: dict[str, Any] = Field(default_factory=dict)


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template_id: str = Field(min_length=1)
    new_id: str = Field(min_length=1)
    values: dict[Literal["?principal", "?resource"], dict[str, str]]


@dataclass(frozen=True)
class PolicySource:
    """Where a policy came from, and the name it is reported under."""

    cedar_id: str  # Cedar's positional id (policy0, ...) or a link's new_id
    policy_id: str  # @id annotation where present, else cedar_id
    file: str
    line: int
    text: str  # the statement, or for a link the template's statement
    effect: str  # "permit" | "forbid"
    is_template: bool = False
    template_id: str | None = None  # for links: the template's policy_id


@dataclass(frozen=True)
class Bundle:
    """An immutable, fully parsed bundle: the unit the engine evaluates against."""

    source: str
    manifest: Manifest
    version: BundleVersion
    policy_set: Any  # cedarpy.PolicySet
    schema: Any  # cedarpy.Schema
    entities: Any  # cedarpy.Entities
    entity_count: int
    policies: Mapping[str, PolicySource]  # by cedar_id, templates included
    trust: RequestTrust  # which request entities this bundle accepts

    def policy_id(self, cedar_id: str) -> str:
        src = self.policies.get(cedar_id)
        return src.policy_id if src else cedar_id

    def is_forbid(self, cedar_id: str) -> bool:
        src = self.policies.get(cedar_id)
        return src is not None and src.effect == "forbid"


def load_bundle(path: Path) -> Bundle:
    return compile_bundle(read_bundle_files(path))


def compile_bundle(files: BundleFiles) -> Bundle:
    problems: list[BundleProblem] = []
    manifest = _manifest(files, problems)
    schema = _schema(files, problems)
    # Policies that parse are still validated when others do not, so one run reports all.
    statements = _statements(files, problems)
    text = "".join(s.text for _, s in statements)
    policy_set = cedarpy.PolicySet.from_str(text, release_gil=True)
    policies = _sources(text, statements, problems)
    if schema is not None and (manifest is None or manifest.validation == "strict"):
        _validate(text, schema, policies, problems)
    policy_set = _link(files, policy_set, policies, problems)
    entities = _entities(files, schema, problems) if schema is not None else None
    trust = None
    if manifest is not None and entities is not None:
        trust = compile_trust(
            manifest.authoritative_types, manifest.request_entities, schema, entities, problems
        )
    if problems or manifest is None or entities is None or trust is None:
        raise BundleError(files.source, problems)
    version = BundleVersion(manifest.name, manifest.version, files.digest)
    return Bundle(
        files.source,
        manifest,
        version,
        policy_set,
        schema,
        entities,
        len(entities),
        policies,
        trust,
    )


def _manifest(files: BundleFiles, problems: list[BundleProblem]) -> Manifest | None:
    if MANIFEST not in files.files:
        problems.append(BundleProblem(MANIFEST, "missing: a bundle needs a name and a version"))
        return None
    try:
        return Manifest.model_validate_json(files.files[MANIFEST])
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(document)"
            problems.append(BundleProblem(MANIFEST, f"{loc}: {err['msg']}"))
        return None


def _schema(files: BundleFiles, problems: list[BundleProblem]) -> Any:
    present = [f for f in SCHEMA_FILES if f in files.files]
    if len(present) != 1:
        what = "missing" if not present else f"ambiguous: both {' and '.join(present)}"
        problems.append(BundleProblem(SCHEMA_FILES[0], f"schema {what}"))
        return None
    name = present[0]
    try:
        text = files.text(name)
        if name.endswith(".json"):
            return cedarpy.Schema.from_json_str(text, release_gil=True)
        return cedarpy.Schema.from_str(text, release_gil=True)
    except BundleError as exc:
        problems.extend(exc.problems)
    except ValueError as exc:
        problems.append(BundleProblem(name, f"invalid schema: {exc}"))
    return None


def _statements(files: BundleFiles, problems: list[BundleProblem]) -> list[tuple[str, Statement]]:
    out: list[tuple[str, Statement]] = []
    for name in sorted(f for f in files.files if f.endswith(".cedar")):
        try:
            text = files.text(name)
        except BundleError as exc:
            problems.extend(exc.problems)
            continue
        for stmt in split_statements(text):
            if not stmt.text.rstrip().endswith(";"):
                problems.append(BundleProblem(name, "unterminated policy (missing `;`)", stmt.line))
                continue
            try:
                cedarpy.PolicySet.from_str(stmt.text)
            except ValueError as exc:
                problems.append(BundleProblem(name, f"parse error: {exc}", stmt.line))
                continue
            out.append((name, stmt))
    return out


def _sources(
    text: str, statements: list[tuple[str, Statement]], problems: list[BundleProblem]
) -> dict[str, PolicySource]:
    """Map Cedar's positional ids to files, lines and @id annotations."""
    est = json.loads(cedarpy.policies_to_json_str(text))
    kinds = {pid: (p, False) for pid, p in est.get("staticPolicies", {}).items()}
    kinds.update({pid: (p, True) for pid, p in est.get("templates", {}).items()})
    sources: dict[str, PolicySource] = {}
    seen: dict[str, PolicySource] = {}
    for i, (name, stmt) in enumerate(statements):
        cedar_id = f"policy{i}"
        policy, is_template = kinds[cedar_id]
        annotated = policy.get("annotations", {}).get("id")
        src = PolicySource(
            cedar_id,
            annotated or cedar_id,
            name,
            stmt.line,
            stmt.text.strip(),
            policy["effect"],
            is_template,
        )
        if src.policy_id in seen:
            first = seen[src.policy_id]
            problems.append(
                BundleProblem(
                    name,
                    f"duplicate policy id (first at {first.file}:{first.line})",
                    stmt.line,
                    src.policy_id,
                )
            )
        seen[src.policy_id] = src
        sources[cedar_id] = src
    return sources


def _validate(
    text: str, schema: Any, sources: Mapping[str, PolicySource], problems: list[BundleProblem]
) -> None:
    result = cedarpy.validate_policies(text, schema, release_gil=True)
    found: dict[BundleProblem, None] = {}  # Cedar may repeat an error; report each once
    for err in result.errors:
        src = sources.get(err.policy_id)
        if src is None:
            found[BundleProblem("(policies)", err.error, None, err.policy_id or None)] = None
        else:
            found[BundleProblem(src.file, err.error, src.line, src.policy_id)] = None
    problems.extend(found)


def _link(
    files: BundleFiles,
    policy_set: Any,
    sources: dict[str, PolicySource],
    problems: list[BundleProblem],
) -> Any:
    if LINKS not in files.files:
        return policy_set
    try:
        raw = json_list_lines(files.text(LINKS))
        json.loads(files.text(LINKS))  # the whole document must be valid, not just its items
    except (ValueError, BundleError) as exc:
        problems.append(BundleProblem(LINKS, f"invalid: must be a JSON list of links ({exc})"))
        return policy_set
    by_policy_id = {s.policy_id: s for s in sources.values() if s.is_template}
    ids = {s.policy_id for s in sources.values()}
    for i, (line, item) in enumerate(raw):
        try:
            link = Link.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            problems.append(BundleProblem(LINKS, f"[{i}].{loc}: {err['msg']}", line))
            continue
        template = by_policy_id.get(link.template_id) or sources.get(link.template_id)
        if template is None or not template.is_template:
            problems.append(BundleProblem(LINKS, f"[{i}]: no template {link.template_id!r}", line))
            continue
        if link.new_id in ids:
            problems.append(BundleProblem(LINKS, f"[{i}]: id {link.new_id!r} already used", line))
            continue
        try:
            policy_set = policy_set.with_linked(template.cedar_id, link.new_id, link.values)
        except (ValueError, KeyError) as exc:
            problems.append(BundleProblem(LINKS, f"[{i}]: {exc}", line, link.new_id))
            continue
        ids.add(link.new_id)
        sources[link.new_id] = PolicySource(
            link.new_id,
            link.new_id,
            LINKS,
            line,
            template.text,
            template.effect,
            False,
            template.policy_id,
        )
    return policy_set


def _entities(files: BundleFiles, schema: Any, problems: list[BundleProblem]) -> Any:
    text = files.text(ENTITIES) if ENTITIES in files.files else "[]"
    try:
        return cedarpy.Entities.from_json_str(text, schema, release_gil=True)
    except ValueError as exc:
        problems.extend(locate_entity_errors(ENTITIES, text, schema, str(exc)))
        return None


def locate_entity_errors(name: str, text: str, schema: Any, message: str) -> list[BundleProblem]:
    """Cedar says only that *some* entity failed; find which, with its line and reason."""
    try:
        elements = json_list_lines(text)
    except ValueError as exc:
        return [BundleProblem(name, f"not a JSON list of entities: {exc}")]
    found: list[BundleProblem] = []
    seen: dict[str, int] = {}
    for index, (line, value) in enumerate(elements):
        if len(found) >= MAX_LOCATED:
            break
        uid = value.get("uid") if isinstance(value, dict) else None
        label = json.dumps(uid) if uid is not None else f"[{index}]"
        try:
            _EntityShape.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "entity"
            found.append(BundleProblem(name, f"{label}: {where}: {err['msg']}", line))
            continue
        reason = entity_error(json.dumps([value]), schema)
        if reason is not None:
            found.append(BundleProblem(name, f"{label}: {reason}", line))
            continue
        if label in seen:
            dup = f"{label}: duplicate (first at line {seen[label]})"
            found.append(BundleProblem(name, dup, line))
        seen.setdefault(label, line)
    return found or [BundleProblem(name, message)]


def json_list_lines(text: str) -> list[tuple[int, Any]]:
    """The elements of a JSON list with the line each starts on (`raw_decode` keeps offsets).

    Raises ValueError if `text` is not a JSON list.
    """
    decoder = json.JSONDecoder()
    out: list[tuple[int, Any]] = []
    i = _skip_space(text, 0)
    if not text.startswith("[", i):
        raise ValueError("expected a JSON list")
    i = _skip_space(text, i + 1)
    if text.startswith("]", i):
        return out
    while True:
        value, end = decoder.raw_decode(text, i)
        out.append((text.count("\n", 0, i) + 1, value))
        i = _skip_space(text, end)
        if text.startswith("]", i):
            return out
        if not text.startswith(",", i):
            raise ValueError(f"expected ',' or ']' at line {text.count(chr(10), 0, i) + 1}")
        i = _skip_space(text, i + 1)


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


_PARSE_PREFIX = "failed to parse entities from:\n"
_PROBE = {"type": "__pdp_probe", "id": ""}


def entity_error(text: str, schema: Any) -> str | None:
    """Cedar's full reason a Cedar JSON entity list does not parse with `schema`, or None.

    `Entities.from_json_str` raises with only the outermost message ("error during entity
    deserialization"); an authorization call reports the whole chain, so ask one that
    fails at entity parsing (the probe request is never evaluated).
    """
    request = {"principal": _PROBE, "action": _PROBE, "resource": _PROBE, "context": {}}
    result = cedarpy.is_authorized(request, "", text, schema)
    for error in result.diagnostics.errors:
        if error.startswith(_PARSE_PREFIX):  # else the entities parsed: only the probe failed
            reason = error[len(_PARSE_PREFIX) :]
            return reason[len(text) + 2 :] if reason.startswith(text + ": ") else reason
    return None

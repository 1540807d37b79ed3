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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cedarpy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pdp.bundle_files import BundleFiles, read_bundle_files
from pdp.entity_slice import BundleEntities
from pdp.errors import BundleError, BundleProblem
from pdp.model import BundleVersion
from pdp.policy_index import Member, PolicyIndex, build_index, known_actions
from pdp.policy_parse import ParsedFile, parse_files, policy_set_from, policy_set_of, validate
from pdp.read_depth import DEFAULT_SLICE_DEPTH, read_literals, too_deep
from pdp.trust import RequestEntityRule, RequestTrust, compile_trust

MANIFEST = "manifest.json"
SCHEMA_FILES = ("schema.cedarschema", "schema.cedarschema.json")
ENTITIES = "entities.json"
LINKS = "links.json"
MAX_LOCATED = 10  # entity problems reported at most: enough to act on, bounded in size
# The characters of a policy id (`@id`) or link `new_id`. Cedar names a policy in an
# evaluation error only inside message text (`policy `ID`: ...`), so an id holding a
# backtick, `: ` or anything else unusual could make an error name another policy.
ID_CHARS = "A-Za-z0-9_.:/-"
ID_PATTERN = f"^[{ID_CHARS}]+$"
MAX_ID = 200
_ID = re.compile(ID_PATTERN)


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

    # Decide each request against only the policies whose scope can match it
    # (`pdp.policy_index`); off evaluates every policy, for diagnosis.
    index_policies: bool = True


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
    new_id: str = Field(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)
    values: dict[Literal["?principal", "?resource"], dict[str, str]]


@dataclass(frozen=True)
class PolicySource:
    """Where a policy came from, and the name it is reported under."""

    cedar_id: str  # Cedar's positional id (policy0, ...) or a link's new_id
    policy_id: str  # @id annotation where present, else cedar_id
    file: str
    line: int | None  # None where Cedar's count and the message locator's disagree
    est_json: str  # Cedar's JSON form of the policy, or for a link its template's
    effect: str  # "permit" | "forbid"
    is_template: bool = False
    template_id: str | None = None  # for links: the template's policy_id
    # for links: the template's cedar_id and the slot values (as in links.json)
    link_of: tuple[str, Mapping[str, Mapping[str, str]]] | None = None

    @property
    def est(self) -> dict[str, Any]:
        """The policy in Cedar's JSON form (parsed on each call: it is kept as text)."""
        est: dict[str, Any] = json.loads(self.est_json)
        return est


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
    index: PolicyIndex | None = None  # None: every request is decided by the whole set
    # The slices of a decision (`pdp.entity_slice`): the base entities by uid, the entity
    # literals the policies read (in every slice), and the depth the policies stay within.
    slice_entities: BundleEntities = field(default_factory=lambda: BundleEntities(()))
    read_literals: frozenset[tuple[str, str]] = frozenset()
    slice_depth: int = DEFAULT_SLICE_DEPTH
    # Each action of the schema with its ancestor groups: a kill switch on a group covers
    # its members, as a policy `action in` that group does.
    action_groups: Mapping[tuple[str, str], frozenset[tuple[str, str]]] = field(
        default_factory=dict
    )

    def policy_id(self, cedar_id: str) -> str:
        src = self.policies.get(cedar_id)
        return src.policy_id if src else cedar_id

    def is_forbid(self, cedar_id: str) -> bool:
        src = self.policies.get(cedar_id)
        return src is not None and src.effect == "forbid"

    def is_permit(self, cedar_id: str) -> bool:
        src = self.policies.get(cedar_id)
        return src is not None and src.effect == "permit" and not src.is_template


def load_bundle(path: Path, slice_depth: int = DEFAULT_SLICE_DEPTH) -> Bundle:
    return compile_bundle(read_bundle_files(path), slice_depth)


def compile_bundle(files: BundleFiles, slice_depth: int = DEFAULT_SLICE_DEPTH) -> Bundle:
    problems: list[BundleProblem] = []
    manifest = _manifest(files, problems)
    schema = _schema(files, problems)
    # Policies that parse are still validated when others do not, so one run reports all.
    parsed = parse_files(_policy_texts(files, problems), problems)
    policies = _sources(parsed, problems)
    if schema is not None and (manifest is None or manifest.validation == "strict"):
        _validate(parsed, schema, policies, problems)
    _depths(policies, slice_depth, problems)
    unlinked = _policy_set(parsed, problems)
    policy_set = _link(files, unlinked, policies, problems)
    entities = _entities(files, schema, problems) if schema is not None else None
    trust = None
    if manifest is not None and entities is not None:
        trust = compile_trust(
            manifest.authoritative_types, manifest.request_entities, schema, entities, problems
        )
    if problems or manifest is None or entities is None or trust is None:
        raise BundleError(files.source, problems)
    version = BundleVersion(manifest.name, manifest.version, files.digest)
    index = _index(manifest, schema, policies, trust, unlinked)
    actions = known_actions(schema)
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
        index,
        BundleEntities(json.loads(str(entities)), actions),
        read_literals(s.est for s in policies.values()),
        slice_depth,
        actions,
    )


def _depths(sources: Mapping[str, PolicySource], depth: int, problems: list[BundleProblem]) -> None:
    """Refuse every policy that reads deeper than a decision's slice (`pdp.read_depth`):
    decided on the slice, it would read an entity left out, and a missing entity makes
    `in` false without an error, so a forbid would silently not apply."""
    for src in sources.values():
        reach = too_deep(src.est, depth)
        if reach is not None:
            problems.append(
                BundleProblem(
                    src.file,
                    f"reads {reach.depth} entity hops deep ({reach.chain}), past the slice "
                    f"depth {depth} (entity_slice_depth; a record field counts as a hop)",
                    src.line,
                    src.policy_id,
                )
            )


def _index(
    manifest: Manifest,
    schema: Any,
    sources: Mapping[str, PolicySource],
    trust: RequestTrust,
    unlinked: Any,
) -> PolicyIndex | None:
    """The bundle's policy index, or None where it could not be sure of a request's scope.

    The index knows an action's groups from the schema (Cedar refuses an action entity that
    disagrees with it). Still, a bundle whose requests may bring entities of an action type
    ("trusted", or a rule naming one) is decided against the whole set: nothing here then
    depends on what a caller sends.
    """
    if not manifest.index_policies or trust.trusted:
        return None
    hierarchy = known_actions(schema)
    action_types = {t for t, _ in hierarchy}
    # (pdp.trust refuses a rule naming a type the schema does not declare, as actions'
    # types are not: this holds today by that rule, and is checked here all the same.)
    claimable = set(trust.allowed) | {p for parents in trust.allowed.values() for p in parents}
    if not hierarchy or claimable & action_types:
        return None
    members = [
        Member(s.cedar_id, s.est_json, *(s.link_of or (None, None)))
        for s in sources.values()
        if not s.is_template
    ]
    # The set before linking: the index's base where a request's statics are too many to
    # parse on the request path (`pdp.policy_index.MAX_PARSED`).
    return build_index(members, hierarchy, unlinked)


def read_manifest(files: BundleFiles) -> Manifest:
    """The bundle's manifest alone (as `compile_bundle` reads it); BundleError if invalid."""
    problems: list[BundleProblem] = []
    manifest = _manifest(files, problems)
    if manifest is None:
        raise BundleError(files.source, problems)
    return manifest


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


def _policy_set(parsed: list[ParsedFile], problems: list[BundleProblem]) -> Any:
    try:
        return policy_set_of(parsed)
    except ValueError as exc:  # Cedar refusing its own JSON form: refuse the bundle
        problems.append(BundleProblem("(policies)", f"policy set: {exc}"))
        return policy_set_of([])


def _policy_texts(files: BundleFiles, problems: list[BundleProblem]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in sorted(f for f in files.files if f.endswith(".cedar")):
        try:
            out.append((name, files.text(name)))
        except BundleError as exc:
            problems.extend(exc.problems)
    return out


def _sources(parsed: list[ParsedFile], problems: list[BundleProblem]) -> dict[str, PolicySource]:
    """Each policy by its bundle id, with its file, line and @id annotation."""
    sources: dict[str, PolicySource] = {}
    seen: dict[str, PolicySource] = {}
    for f in parsed:
        for p in f.policies:
            annotated = p.id_annotation
            src = PolicySource(
                p.cedar_id,
                annotated or p.cedar_id,
                f.name,
                p.line,
                p.est_json,
                p.effect,
                p.is_template,
            )
            if annotated is not None and not (len(annotated) <= MAX_ID and _ID.match(annotated)):
                problems.append(BundleProblem(f.name, _BAD_ID, p.line, repr(annotated)))
            elif annotated is not None and _POSITIONAL.match(annotated):
                # `policy3` is how an un-annotated policy is reported: another policy
                # claiming it would make every report about either ambiguous.
                problems.append(BundleProblem(f.name, _RESERVED_ID, p.line, annotated))
            elif src.policy_id in seen:
                first = seen[src.policy_id]
                where = first.file if first.line is None else f"{first.file}:{first.line}"
                problems.append(
                    BundleProblem(
                        f.name, f"duplicate policy id (first at {where})", p.line, src.policy_id
                    )
                )
            seen[src.policy_id] = src
            sources[p.cedar_id] = src
    return sources


_BAD_ID = f"@id may hold only the characters [{ID_CHARS}], 1 to {MAX_ID} of them"
_POSITIONAL = re.compile(r"^policy[0-9]+$")
_RESERVED_ID = "@id of the form policyN is reserved: it names un-annotated policies"


def _validate(
    parsed: list[ParsedFile],
    schema: Any,
    sources: Mapping[str, PolicySource],
    problems: list[BundleProblem],
) -> None:
    found: dict[BundleProblem, None] = {}  # Cedar may repeat an error; report each once
    for name, cedar_id, message in validate(parsed, schema):
        src = sources.get(cedar_id) if cedar_id else None
        if src is None:
            found[BundleProblem(name, message)] = None
        else:
            found[BundleProblem(src.file, message, src.line, src.policy_id)] = None
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
    ids = {s.policy_id for s in sources.values()} | sources.keys()
    accepted: list[tuple[int, int, Link, PolicySource]] = []
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
        ids.add(link.new_id)
        accepted.append((i, line, link, template))
    linked = _link_all(policy_set, accepted, problems)
    for _, line, link, template in accepted:
        sources[link.new_id] = PolicySource(
            link.new_id,
            link.new_id,
            LINKS,
            line,
            template.est_json,
            template.effect,
            False,
            template.policy_id,
            (template.cedar_id, {str(slot): uid for slot, uid in link.values.items()}),
        )
    return linked


def _link_all(
    policy_set: Any,
    accepted: list[tuple[int, int, Link, PolicySource]],
    problems: list[BundleProblem],
) -> Any:
    """Every link in one Cedar call (one copy of the set, not one per link)."""
    batch = [
        {"template_id": t.cedar_id, "new_id": link.new_id, "values": link.values}
        for _, _, link, t in accepted
    ]
    try:
        return policy_set.with_linked_batch(batch) if batch else policy_set
    except (ValueError, KeyError):
        pass
    # All or nothing: on this error path only, try each link alone to report every one
    # Cedar refuses, each with its own message. Against a set of just the templates:
    # whether a link fits depends only on its template (ids already used were refused
    # above), and copying that set per link costs far less than copying the whole bundle.
    templates = {t.cedar_id: t.est_json for _, _, _, t in accepted}
    alone = policy_set_from([], list(templates.items()))
    for (i, line, link, _), one in zip(accepted, batch, strict=True):
        try:
            alone.with_linked_batch([one])
        except (ValueError, KeyError) as exc:
            problems.append(BundleProblem(LINKS, f"[{i}]: {exc}", line, link.new_id))
    return policy_set


def _entities(files: BundleFiles, schema: Any, problems: list[BundleProblem]) -> Any:
    text = files.text(ENTITIES) if ENTITIES in files.files else "[]"
    try:
        return cedarpy.Entities.from_json_str(text, schema, release_gil=True)
    except ValueError as exc:
        problems.extend(locate_entity_errors(ENTITIES, text, schema, str(exc), MAX_LOCATED))
        return None


def locate_entity_errors(
    name: str, text: str, schema: Any, message: str, limit: int = 1
) -> list[BundleProblem]:
    """Cedar says only that *some* entity failed; find which, with its line and reason.

    Bisection with Cedar: ask about the left half of a failing slice; if it fails, look
    inside it, else inside the right half (which must hold the problem, unless the halves
    only conflict, as a uid given twice does). One bad entity among n costs about log2(n)
    Cedar calls over n entities in all, not n calls: a rejected request costs a small
    multiple of a good one. Stops after `limit` problems: 1 for a request (the caller
    fixes it and retries), more for a bundle.
    """
    try:
        spans = _json_list_spans(text)
    except ValueError as exc:
        return [BundleProblem(name, f"not a JSON list of entities: {exc}")]
    found: list[BundleProblem] = []

    def probe(lo: int, hi: int) -> str | None:
        # The original text of elements lo..hi-1 (commas included): nothing re-serialised.
        return entity_error(f"[{text[spans[lo][2] : spans[hi - 1][3]]}]", schema)

    def search(lo: int, hi: int, reason: str | None) -> None:
        """Elements lo..hi-1 should fail (for `reason`, if already asked); locate why."""
        if hi - lo == 1:
            reason = reason or probe(lo, hi)
            if reason is not None:
                found.append(_entity_problem(name, lo, spans[lo], reason))
            return
        mid = (lo + hi) // 2
        left = probe(lo, mid)
        if left is None:
            search(mid, hi, None)
            return
        search(lo, mid, left)
        right = probe(mid, hi) if len(found) < limit else None
        if right is not None:
            search(mid, hi, right)

    if spans:
        search(0, len(spans), None)
        if not found:
            found = _duplicates(name, text, spans, schema, limit)
    if not found:
        whole = probe(0, len(spans)) if spans else None
        found = [BundleProblem(name, whole or message)]
    return found[:limit]


Span = tuple[int, Any, int, int]  # (line, value, start offset, end offset) of an element


def _label(index: int, value: Any) -> str:
    uid = value.get("uid") if isinstance(value, dict) else None
    return json.dumps(uid) if uid is not None else f"[{index}]"


def _entity_problem(name: str, index: int, span: Span, reason: str) -> BundleProblem:
    """One entity Cedar refuses alone; our shape check words a malformed one better."""
    line, value, _, _ = span
    label = _label(index, value)
    try:
        _EntityShape.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "entity"
        return BundleProblem(name, f"{label}: {where}: {err['msg']}", line)
    return BundleProblem(name, f"{label}: {reason}", line)


def _duplicates(
    name: str, text: str, spans: list[Span], schema: Any, limit: int
) -> list[BundleProblem]:
    """Uids given twice (each entity parses alone, the list does not), confirmed by Cedar."""
    found: list[BundleProblem] = []
    first: dict[str, int] = {}
    for i, (line, value, start, end) in enumerate(spans):
        label = _label(i, value)
        j = first.setdefault(label, i)
        if j == i or len(found) >= limit:
            continue
        if entity_error(f"[{text[spans[j][2] : spans[j][3]]},{text[start:end]}]", schema):
            dup = f"{label}: duplicate (first at line {spans[j][0]})"
            found.append(BundleProblem(name, dup, line))
    return found


def json_list_lines(text: str) -> list[tuple[int, Any]]:
    """The elements of a JSON list with the line each starts on (`raw_decode` keeps offsets).

    Raises ValueError if `text` is not a JSON list.
    """
    return [(line, value) for line, value, _, _ in _json_list_spans(text)]


def _json_list_spans(text: str) -> list[Span]:
    """Each element of a JSON list with its line and its offsets in `text`."""
    decoder = json.JSONDecoder()
    out: list[Span] = []
    line, counted = 1, 0  # lines are counted incrementally: linear in the text, not squared
    i = _skip_space(text, 0)
    if not text.startswith("[", i):
        raise ValueError("expected a JSON list")
    i = _skip_space(text, i + 1)
    if text.startswith("]", i):
        return out
    while True:
        value, end = decoder.raw_decode(text, i)
        line, counted = line + text.count("\n", counted, i), i
        out.append((line, value, i, end))
        i = _skip_space(text, end)
        if text.startswith("]", i):
            return out
        if not text.startswith(",", i):
            line += text.count("\n", counted, i)
            raise ValueError(f"expected ',' or ']' at line {line}")
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

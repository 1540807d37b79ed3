"""The per-document sharing bundle: the default bundle plus one `grant-document-access`
link per (document, user) share, with the users and documents it names.

Shared by `test_policy_index` (differential tests) and `bench/` (the 10,000-link figures).
"""

from __future__ import annotations

import json
from typing import Any

from pdp.bundle_files import BundleFiles, read_bundle_files

from .support import REPO

POLICIES = REPO / "policies"
DOCUMENTS, SHARED_WITH, USERS = 2_000, 5, 50  # 10,000 links


def shared_user(document: int, k: int) -> str:
    """The k-th user document `document` is shared with."""
    return f"u{(document + k) % USERS}"


def sharing_bundle_files(documents: int = DOCUMENTS, shared_with: int = SHARED_WITH) -> BundleFiles:
    files = read_bundle_files(POLICIES)
    links = json.loads(files.files["links.json"]) + [
        {
            "template_id": "grant-document-access",
            "new_id": f"share-d{d}-{shared_user(d, k)}",
            "values": {
                "?principal": {"type": "User", "id": shared_user(d, k)},
                "?resource": {"type": "Document", "id": f"d{d}"},
            },
        }
        for d in range(documents)
        for k in range(shared_with)
    ]
    acme = {"__entity": {"type": "Org", "id": "acme"}}
    users: list[dict[str, Any]] = [
        {
            "uid": {"type": "User", "id": f"u{u}"},
            "attrs": {"org": acme, "department": "eng", "region": "eu", "suspended": False}
            | {"cleared_purposes": []},
            "parents": [],
        }
        for u in range(USERS)
    ]
    docs: list[dict[str, Any]] = [
        {
            "uid": {"type": "Document", "id": f"d{d}"},
            "attrs": {
                "org": acme,
                "project": {"__entity": {"type": "Project", "id": "apollo"}},
                "owner": {"__entity": {"type": "User", "id": "frank"}},
                "editors": [],
                "viewers": [],
            },
            "parents": [],
        }
        for d in range(documents)
    ]
    entities = json.loads(files.files["entities.json"]) + users + docs
    return BundleFiles(
        "sharing-bundle",
        {
            **files.files,
            "links.json": json.dumps(links).encode(),
            "entities.json": json.dumps(entities).encode(),
        },
    )

"""Attacks on decision logs: record bounds and secrets the detectors miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_decision_log import LONG_IDS, bundle, check, records, serve

__all__ = ["bundle"]  # the fixture, shared with test_decision_log


def test_a_record_never_exceeds_max_record_bytes_even_with_astral_ids(bundle: Path) -> None:
    # Ids are cut to 256 *characters*, but json.dumps writes an astral character as a
    # 12-byte surrogate-pair escape: principal and resource ids of 300 emoji make a record
    # of ~6.3 KB that `_bounded` cannot shrink (it drops only entities, context, errors,
    # policies), over the default 4096 and over PIPE_BUF (records of `--workers` sharing
    # stdout may then interleave).
    emoji = "\U0001f600" * 300
    with serve(bundle, env=LONG_IDS) as srv, srv.channel() as ch:
        srv.stub(ch).Check(check(principal=("User", emoji), resource=("Thing", emoji)))
    lines = [line for line in srv.lines if line.startswith('{"v":')]
    assert len(lines) == 1
    assert len(lines[0].encode()) <= 4096, len(lines[0].encode())


@pytest.mark.parametrize(
    "text",
    [
        "Authorization%3A%20Bearer%20SECRET0123abcdef",  # URL-encoded header in a context value
        "https://app.example/cb?access_token=SECRET0123abcdef",  # OAuth implicit-flow URL
        'Bearer "SECRET0123abcdef"',
    ],
)
def test_credentials_inside_context_strings_are_masked(bundle: Path, text: str) -> None:
    with serve(bundle) as srv, srv.channel() as ch:
        srv.stub(ch).Check(check({"note": text}))
    [r] = records(srv.lines)
    assert "SECRET0123abcdef" not in "\n".join(srv.lines), r["context"]

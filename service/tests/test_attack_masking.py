"""Attacks on decision log masking: card numbers spelled in ways the detector misses."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_decision_log import bundle, check, records, serve

__all__ = ["bundle"]  # the fixture, used by name

# Each a Luhn-valid test PAN (4111 1111 1111 1111) as a person or a form writes it.
SPELLINGS = {
    "dots": "4111.1111.1111.1111",
    "nbsp": "4111\u00a01111\u00a01111\u00a01111",
    "tabs": "4111\t1111\t1111\t1111",
    "double spaces": "4111  1111  1111  1111",
    "spaced dashes": "4111 - 1111 - 1111 - 1111",
    "line breaks": "4111\r\n1111\r\n1111\r\n1111",
    "fullwidth": "4111111111111111".translate({48 + d: 0xFF10 + d for d in range(10)}),
    "zero-width spaces": "4111\u200b1111\u200b1111\u200b1111",
    "soft hyphens": "4111\u00ad1111\u00ad1111\u00ad1111",
    "left-to-right marks": "4111\u200e1111\u200e1111\u200e1111",
    "bidi-wrapped, as a phone copies it": "\u202a4111 1111 1111 1111\u202c",
    "invisible in wide gaps": "4111 -\u200b 1111 \u00ad- 1111\u2060 \u2060 1111",
    "variation selectors": "4111\ufe0f1111\ufe0f1111\ufe0f1111",
}


@pytest.mark.parametrize("kind", sorted(SPELLINGS))
def test_a_card_number_in_a_resource_id_is_masked_however_it_is_spelled(
    bundle: Path, kind: str
) -> None:
    # Each spelling once reached the decision log as it was sent: `_DIGIT_RUN` took ASCII
    # digits with at most one space or dash between them, so dots, no-break spaces, tabs,
    # full-width digits and later two or three separators in a row (`4111  1111`,
    # `4111 - 1111`, CRLF), then invisible ones (zero-width spaces, soft hyphens), went
    # through (the spans' `pdp.action` mask the same way).
    pan = SPELLINGS[kind]
    with serve(bundle) as srv, srv.channel() as ch:
        srv.stub(ch).Check(check(resource=("Thing", pan)))
    (record,) = records(srv.lines)
    assert record["resource"]["id"] != pan, f"{kind}: {pan!r} written unmasked"
    assert record["masked"] == 1

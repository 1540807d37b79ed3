from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pdp.policy_text import split_statements


def test_statements_start_at_their_first_significant_line() -> None:
    text = '// header\n\n@id("a")\npermit(principal, action, resource);\n\n// b\nforbid(principal, action, resource)\nwhen { "x;y" == "x;y" }; // trailing ;\n'
    [a, b] = split_statements(text)
    assert a.line == 3 and a.text.startswith("// header") and '@id("a")' in a.text
    assert b.line == 7 and b.text.rstrip().endswith('"x;y" };')


def test_semicolons_in_strings_and_comments_do_not_split() -> None:
    text = 'permit(principal, action, resource) when { context.s like "a;\\";b" }; // ; ;\n'
    assert len(split_statements(text)) == 1


def test_trailing_text_without_semicolon_is_kept_as_a_statement() -> None:
    [a, b] = split_statements("permit(principal, action, resource);\nforbid(principal")
    assert b.line == 2 and not b.text.endswith(";")


policy = st.builds(
    lambda s, comment: (
        f'// {comment}\npermit(principal, action, resource) when {{ context.s == "{s}" }};\n'
    ),
    st.text(
        alphabet=st.characters(blacklist_characters='"\\\n', blacklist_categories=["Cs"]),
        max_size=10,
    ),
    st.text(
        # a bare \r ends a comment, as in Cedar
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
        max_size=10,
    ),
)


@given(st.lists(policy, max_size=6))
def test_splitting_is_lossless_and_counts_policies(policies: list[str]) -> None:
    text = "".join(policies)
    statements = split_statements(text)
    assert len(statements) == len(policies)
    assert (
        "".join(s.text for s in statements) == text.rstrip("\n")
        or "".join(s.text for s in statements) + "\n" == text
    )
    # a line ends at \r\n, \n or a bare \r (strings may hold a raw \r)
    breaks = [len(re.findall(r"\r\n|\r|\n", p)) for p in policies]
    lines = [1 + sum(breaks[:i]) + 1 for i in range(len(policies))]
    assert [s.line for s in statements] == lines


def test_a_bare_carriage_return_ends_a_comment_and_a_line() -> None:
    text = (
        'permit(principal, action, resource);\n// c\r@id("b")\rforbid(principal, action, resource);'
    )
    [a, b] = split_statements(text)
    assert (a.line, b.line) == (1, 3) and b.text.startswith("\n// c\r@id")

"""Property: the artifact printer is exact for every value (strings with ${, \\, ", ''), offline."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from disklet.layout.artifact import render_artifact
from disklet.layout.static import static_evaluate

PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
TRICKY = st.sampled_from(["${x}", "\\${x}", "$${x}", "''${x}", '"', "\\", "\\\\\"", "${", "$", "''", "#", "/*"])
STRINGS = st.one_of(PRINTABLE, TRICKY, st.lists(st.one_of(PRINTABLE, TRICKY), max_size=4).map("".join))
SCALARS = st.one_of(STRINGS, st.integers(min_value=0, max_value=2**53), st.booleans())
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(STRINGS, inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(STRINGS, VALUES, max_size=5))
def test_artifact_reads_back_as_exactly_the_value(value: dict[str, Any]) -> None:
    artifact = render_artifact(value)
    assert static_evaluate(artifact) == {"disko": {"devices": value}}
    # deterministic: same value, same bytes
    assert render_artifact(dict(reversed(list(value.items())))) == artifact

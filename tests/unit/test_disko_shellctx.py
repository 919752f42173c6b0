"""The shell-context lexer the disko oracle uses (devkit/disko/shellctx.py; pure)."""

from __future__ import annotations

from devkit.disko import shellctx


def test_shell_context_lexer_knows_the_contexts() -> None:
    script = 'echo a # x $(y)\nf "d$v" \'s$\' bare\n'
    ctx = shellctx.contexts(script)
    assert ctx[script.index("$(y)")] == shellctx.COMMENT
    assert ctx[script.index("d$v")] == shellctx.DOUBLE
    assert ctx[script.index("s$")] == shellctx.SINGLE
    assert ctx[script.index("bare")] == shellctx.BARE
    assert [o.inert for o in shellctx.occurrences('mount "/srv/a" /srv/a', "/srv/a")] == [True, True]
    assert [o.inert for o in shellctx.occurrences('mount "/x/$(id)"', "/x/$(id)")] == [False]
    assert [o.inert for o in shellctx.occurrences("mount /x/a*b", "/x/a*b")] == [False]


def test_quotes_escapes_and_comments() -> None:
    script = 'a "x\\"y" b # c\n\'q "z\' w\\ #nc\n'
    ctx = shellctx.contexts(script)
    assert ctx[script.index("y")] == shellctx.DOUBLE  # an escaped quote does not end the string
    assert ctx[script.index(" c")] == shellctx.COMMENT
    assert ctx[script.index("z")] == shellctx.SINGLE  # a double quote inside single quotes is literal
    assert ctx[script.index("nc")] == shellctx.BARE  # "#" inside a word is not a comment
    assert shellctx.inert_in("it's", shellctx.SINGLE) is False
    assert shellctx.inert_in("/srv/a b", shellctx.BARE) is False
    assert shellctx.inert_in("/srv/a b", shellctx.DOUBLE) is True

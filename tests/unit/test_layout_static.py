"""Offline (tree-sitter) reading: literal bodies give the evaluated value; anything else is refused."""

from __future__ import annotations

import pytest

from disklet.layout import REFUSE_HINT, MalformedLayout, extract_targets, static_evaluate

SEED_RAW = """{
disko.devices.disk.data1 = {
type = "disk";
device = "/dev/nvme1n1";
content = {
type = "gpt";
partitions.data = {
size = "100%";
content = {
type = "filesystem";
format = "ext4";
mountpoint = "/var/lib/kcore/volumes1";
};
};
};
};
}"""


def test_seed_raw_body() -> None:
    value = static_evaluate(SEED_RAW)
    disk = value["disko"]["devices"]["disk"]["data1"]
    assert disk["device"] == "/dev/nvme1n1"
    assert disk["content"]["partitions"]["data"]["content"]["format"] == "ext4"


@pytest.mark.parametrize("body,expected", [
    ('{ a = 1; b = -2; c = 1.5; d = true; e = false; f = null; g = [ 1 "x" [ ] { } ]; }',
     {"a": 1, "b": -2, "c": 1.5, "d": True, "e": False, "f": None, "g": [1, "x", [], {}]}),
    ('{ "quoted name" = "v"; "a.b" = 1; }', {"quoted name": "v", "a.b": 1}),
    ('{ s = "a\\\\b\\"c\\nd\\te\\qf"; }', {"s": 'a\\b"c\nd\teqf'}),
    ('{ s = "\\${x}"; t = "\\$"; }', {"s": "${x}", "t": "$"}),
    ("{ a.b = 1; a.c = 2; }", {"a": {"b": 1, "c": 2}}),
    ("{ a = { b = 1; }; a.c = 2; }", {"a": {"b": 1, "c": 2}}),
    ("{ a.c = 2; a = { b = 1; }; }", {"a": {"b": 1, "c": 2}}),
    ("# comment\n{ /* c */ a = 1; # trailing\n}", {"a": 1}),
    ("({ a = 1; })", {"a": 1}),
])
def test_literals(body: str, expected: object) -> None:
    assert static_evaluate(body) == expected


@pytest.mark.parametrize("body,what", [
    ('let d = "/dev/sda"; in { disko.devices.disk.x.device = d; }', "let"),
    ('{ disko.devices.disk.x.device = let d = "/dev/sda"; in d; }', "let"),
    ("with builtins; { a = 1; }", "with"),
    ('{ a = "${x}"; }', "interpolation"),
    ('{ a = "/dev/" + "sda"; }', "concatenation"),
    ("{ a = ''/dev/sda''; }", "''"),
    ("{ ... }: { disko.devices = { }; }", "function"),
    ("{ lib, ... }: { }", "function"),
    ("x: x", "function"),
    ('{ a = builtins.readFile "/etc/passwd"; }', "function call"),
    ("{ a = import /etc/passwd; }", "function call"),
    ("rec { a = 1; b = a; }", "rec"),
    ("{ inherit a; }", "inherit"),
    ("{ a = b; }", "variable"),
    ("{ a = ./x; }", "path"),
    ("{ a = <nixpkgs>; }", "search path"),
    ('{ ${"a"} = 1; }', "attribute name"),
    ("{ a = x.y; }", "selection"),
    ('{ a = if true then "a" else "b"; }', "if"),
    ('{ a = "$${x}"; }', "$"),
    ("{ a.b = 1; a.b = 2; }", "already defined"),
    ("{ a = 1; a.b = 2; }", "already defined"),
    ("{ a = ; }", "parse"),
    ("{ a = 1 }", "parse"),
    ("", "one attribute set"),
    ("{ } { }", "function call"),
])
def test_refused(body: str, what: str) -> None:
    with pytest.raises(MalformedLayout) as info:
        static_evaluate(body)
    assert what in str(info.value)
    assert REFUSE_HINT in str(info.value)


# The seed's lexical scanner missed these; static mode either reads them literally or refuses.
def test_quoted_device_key_found() -> None:
    body = '{ disko.devices.disk.x = { "device" = "/dev/sdb"; type = "disk"; }; }'
    assert extract_targets(body, force_static=True).devices == ["/dev/sdb"]


def test_device_on_next_line_found() -> None:
    body = '{ disko.devices.disk.x = { device =\n    "/dev/sdc";\n type = "disk"; }; }'
    assert extract_targets(body, force_static=True).devices == ["/dev/sdc"]


def test_let_and_multiline_refused() -> None:
    with pytest.raises(MalformedLayout, match="install nix or use diskLayout"):
        extract_targets('let d = "/dev/sdd"; in { disko.devices.disk.x.device = d; }', force_static=True)
    with pytest.raises(MalformedLayout, match="install nix or use diskLayout"):
        extract_targets("{ disko.devices.disk.x.device = ''/dev/sde''; }", force_static=True)


def test_zpool_members_found() -> None:
    body = """{ disko.devices.zpool.tank = { type = "zpool"; mode.topology = {
        type = "topology";
        vdev = [ { mode = "mirror"; members = [ "/dev/sda" "/dev/sdb" ]; } ];
        log = [ { members = [ "/dev/nvme0n1" ]; } ];
        special = [ { members = [ "/dev/nvme1n1" ]; } ];
        dedup = [ { members = [ "/dev/nvme2n1" ]; } ];
        spare = [ "/dev/sdz" ]; cache = [ "/dev/nvme3n1" "/dev/sda" ]; }; }; }"""
    extraction = extract_targets(body, force_static=True)
    assert extraction.method == "static"
    assert extraction.devices == ["/dev/sda", "/dev/sdb", "/dev/nvme0n1", "/dev/nvme2n1", "/dev/nvme1n1",
                                  "/dev/sdz", "/dev/nvme3n1"]


def test_size_limit() -> None:
    with pytest.raises(MalformedLayout, match="the limit is"):
        static_evaluate("{ a = \"" + "x" * 300000 + "\"; }")


@pytest.mark.parametrize("body", [
    "{ a = " + "[ " * 5000 + "]" * 5000 + "; }",
    "{ a = " + "(" * 5000 + "1" + ")" * 5000 + "; }",
    "{ a = " + "{ b = " * 3000 + "1" + "; }" * 3000 + "; }",
    "{ a = " + "[ " * 70 + "]" * 70 + "; }",
])
def test_deep_nesting_is_a_malformed_layout_not_a_crash(body: str) -> None:
    with pytest.raises(MalformedLayout, match="nested deeper"):
        static_evaluate(body)


def test_check_depth_is_iterative_and_bounds_lists_and_sets() -> None:
    from disklet.layout.errors import check_depth

    deep: object = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(MalformedLayout, match="nested deeper than 64"):
        check_depth(deep)
    ok: object = 1
    for _ in range(63):
        ok = {"a": ok}
    check_depth(ok)

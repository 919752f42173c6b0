"""Fake ``systemd-run`` and ``nixos-rebuild`` executables shared by the host pipeline tests and the e2e
harness: they append their argv as JSON lines to the file named by ``$FAKE_LOG``; ``systemd-run``
execs what follows ``--``; ``nixos-rebuild ACTION`` fails when ``$FAKE_REBUILD_FAIL == ACTION``
(``switch`` exits 4 naming failed units, like switch-to-configuration)."""

from __future__ import annotations

import sys

FAKE_SYSTEMD_RUN = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"cmd": "systemd-run", "argv": sys.argv[1:]}}) + "\\n")
rest = sys.argv[sys.argv.index("--") + 1:]
os.execv(rest[0], rest)
"""

FAKE_NIXOS_REBUILD = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"cmd": "nixos-rebuild", "argv": sys.argv[1:]}}) + "\\n")
action = sys.argv[1]
if os.environ.get("FAKE_REBUILD_FAIL") == action:
    print("building the system configuration...")
    if action == "switch":
        print("warning: the following units failed: disklet-data.mount, foo.service", file=sys.stderr)
        sys.exit(4)
    print("error: evaluation aborted", file=sys.stderr)
    sys.exit(1)
print(f"nixos-rebuild {{action}}: ok")
"""

"""disklet: Kubernetes-native day-2 storage for bare-metal and NixOS nodes."""

import os

__version__ = "0.1.0"
GROUP = "disklet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def version_line(program: str) -> str:
    """``<program> <version> (commit <revision>)`` for ``--version``: the revision is the commit an
    image was built from (``DISKLET_REVISION``, set by the Dockerfile), ``unknown`` outside an image."""
    return f"{program} {__version__} (commit {os.environ.get('DISKLET_REVISION') or 'unknown'})"

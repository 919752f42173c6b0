"""disklet: Kubernetes-native day-2 storage for bare-metal and NixOS nodes."""

__version__ = "0.1.0"
GROUP = "disklet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

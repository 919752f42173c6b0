"""Repository-wide pytest plugins: the real control plane fixture (devkit/pytest_envtest.py) and the
vm tier's groups of guest tests (devkit/vm/pytest_vm.py)."""

pytest_plugins = ["devkit.pytest_envtest", "devkit.vm.pytest_vm"]

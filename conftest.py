"""Repository-wide pytest plugins: the real control plane fixture (devkit/pytest_envtest.py)."""

pytest_plugins = ["devkit.pytest_envtest"]

"""Developer kit, never shipped: the in-memory Kubernetes API (kmock-based) used by API-tier
tests, the local demo and the e2e-mock run, the offline admission emulator, and the demo
itself (``python -m devkit.demo``). Needs the ``test`` extra (kmock, cel-expr-python)."""

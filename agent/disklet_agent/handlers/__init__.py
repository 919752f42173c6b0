"""Kopf handler modules of the node agent; each exposes ``register(registry, deps)``."""

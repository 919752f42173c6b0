"""Kopf handler modules of the operator; each exposes ``register(registry)`` (thin: logic/ decides)."""

"""Test and demo support: an in-memory Kubernetes API (kmock-based) that disklet's API-tier
tests, the local demo and the e2e-mock run use. Needs the ``test`` extra (kmock)."""

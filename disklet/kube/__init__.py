"""disklet's one way to talk to Kubernetes (see docs/architecture.md).

- :mod:`disklet.kube.client`: the REST client (``KubeClient``, ``Kind``, ``ApiError``);
- :mod:`disklet.kube.login`: where credentials come from (Kopf's public login, kubeconfig);
- :mod:`disklet.kube.patch`: the JSON merge patches we write (pure, no I/O);
- :mod:`disklet.kube.lease`: the agent↔operator Lease contract.

Nothing is imported here, so pure modules can use ``patch`` and ``lease`` without aiohttp.
"""

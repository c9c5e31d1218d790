"""Sidecar injection (``injector``: a pure pod -> JSON patch function), the admission
webhooks as kopf handlers (``admission``), their configurations (``webhooks``) and their
serving certificate (``certs``)."""

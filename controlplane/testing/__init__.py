"""Harnesses for the tests, the benchmark and ``controlplane demo``: the mesh on one machine.

A real Envoy (``envoy``), loopback backends (``backends``, ``tcp_echo``), the control plane as
a process with a client for its debug port (``controlplane_process``), a mesh of both
(``mesh``), pods as network namespaces (``netns``, ``pod_apps``), traffic helpers
(``traffic``), free loopback ports (``ports``) and a Python ADS client with simulated proxies
(``ads_client``). Like ``kopf.testing``, it ships in the package so the demo and ``bench/`` can
use it, but nothing in the package imports it except the demo command (import-linter checks).
"""

"""Test support shared by every tier: named meshes (``meshes``) and a PKI built independently
of ``controlplane.ca`` (``pki``). Free ports come from ``controlplane.testing.ports``, the one
port picker of the tests, the benchmark and the demo."""

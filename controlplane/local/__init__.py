"""Running the mesh on one machine: a real Envoy, loopback backends, the control plane as a
process, and a client for its debug port. Used by `controlplane demo` and by the tests."""

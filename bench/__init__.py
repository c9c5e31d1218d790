"""The xDS delivery benchmark (`make bench`): simulated proxies against a real control plane."""

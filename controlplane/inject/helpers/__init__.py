"""The programs the example injection templates run beside an application.

Each is a ``controlplane helper`` subcommand in the project image (``${image}`` in a
template): ``log-collect`` (``logs``), ``config-sync`` and ``secrets-agent`` (``sync``).
They are small, dependency-free and run as long as the Pod does.
"""

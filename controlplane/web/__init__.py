"""A page to look at on the debug port: the proxies and their sync state, every resource and
its conditions, and the routing of one host while a canary moves (``page.py``)."""

from controlplane.web.page import DebugPage

__all__ = ["DebugPage"]

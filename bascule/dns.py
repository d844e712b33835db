"""What a pod's failed name lookup looks like in its log, and what to tell the user then:
smoke and migration Jobs reach Services by name, so a cluster without working DNS fails
them with a resolver message that does not name the cause."""

from __future__ import annotations

import re

# The resolver's words as libpq, Python, curl, Go and BusyBox print them.
_UNRESOLVED = re.compile(
    r"could not translate host name"
    r"|Name or service not known"
    r"|Temporary failure in name resolution"
    r"|No address associated with hostname"
    r"|Could not resolve host"
    r"|lookup \S+ on \S+: no such host"
    r"|getaddrinfo (ENOTFOUND|EAI_AGAIN)"
    r"|bad address '",
    re.IGNORECASE,
)

HINT = (
    "a name did not resolve inside the pod: check the cluster's DNS (the kube-dns Service in "
    "kube-system and the CoreDNS pods or process behind it) and the name, e.g. "
    "<service>.<namespace>.svc"
)


def unresolved_hint(log: str) -> str | None:
    """The hint when ``log`` shows a failed name lookup, else None."""
    return HINT if _UNRESOLVED.search(log) else None

"""Whether a download site answers, asked cheaply (public: ``tlbench.unreachable``): a plugin's
``unavailable`` check uses it to say before any cell runs that a download cannot happen here."""

from __future__ import annotations

from typing import Optional


def unreachable(url: str, timeout_s: float = 3.0) -> Optional[str]:
    """Why the server of ``url`` (or the proxy for it) does not answer, or None when it does: a
    connection opened and closed, nothing sent, so it costs a DNS lookup and one round trip
    instead of a download library's retries (half a minute and more, offline)."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    proxy = urllib.request.getproxies().get(urlsplit(url).scheme)
    parts = urlsplit(proxy or url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:  # no DNS, refused, unreachable network, timeout
        return f"{type(exc).__name__}: {exc}"
    return None

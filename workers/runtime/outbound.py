"""Outbound http(s) to addresses we vetted: media URLs the decode stage reads, webhook URLs the
webhooks stage posts to. Both come from outside (an event payload, a user's webhook), so
neither may reach the cloud's metadata endpoint or, unless configuration allows it, a private
address.

A check made on the name alone can be bypassed by a DNS answer that changes between the check
and the connection (rebinding). So the host is resolved once, every address it resolves to is
vetted, and the request connects to the vetted address itself, keeping the real name in the
Host header and in TLS (SNI and certificate checks).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from workers.runtime.errors import PermanentError

# Cloud instance-metadata endpoints: nothing from outside may make a worker fetch its own
# credentials. Link-local ranges (169.254/16, fe80::/10) are refused as a whole.
METADATA_HOSTS: Final = frozenset(
    {"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)

Vet = Callable[[str], str | None]  # address -> why it is refused, or None


def address_refusal(address: str, *, allow_private: bool, opt_in: str = "CAPSTREAM_HTTP_ALLOW_PRIVATE") -> str | None:
    """Why ``address`` may not be connected to, or None if it may. ``opt_in`` names the
    setting that allows private addresses, for the message."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return "metadata endpoint"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "not a unicast host"
    if not allow_private and (ip.is_loopback or ip.is_private):
        return f"private address; {opt_in}=true allows it"
    return None


def public_uri(url: str) -> str:
    """``url`` without what may be a secret: user info, the query string and fragment (a
    presigned or tokened URL). Safe in logs, letters, search results and webhook bodies."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def url_refusal(url: str) -> str | None:
    """What is wrong with ``url`` before any lookup: not http(s), no host, a metadata name."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return f"{public_uri(url)}: only http(s) URLs with a host are allowed"
    if host in METADATA_HOSTS:
        return f"{host} is a metadata endpoint"
    return None


def vet_host(url: str, vet: Vet) -> str:
    """Resolve ``url``'s host once and vet every address; the address to connect to."""
    if refusal := url_refusal(url):
        raise PermanentError("address_not_allowed", refusal)
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PermanentError("object_not_found", f"cannot resolve {host}: {exc.strerror}") from exc
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:  # all of them: the resolver's order must not matter
        if reason := vet(address):
            raise PermanentError("address_not_allowed", f"{host} resolves to {address} ({reason})")
    return addresses[0]


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The request URL with the vetted address as host, the Host header, the TLS name (an
    httpx request extension)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    header_host = parts.netloc.rpartition("@")[2]
    return target, {"Host": header_host}, {"sni_hostname": host} if parts.scheme == "https" else {}

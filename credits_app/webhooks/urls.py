"""Which URLs may receive webhooks.

A receiver's URL is checked when it is set (validate) and its host resolved again before
every delivery (check_resolved): a name that resolved to a public address when the endpoint
was created can point at the service's own network later. Every address the name resolves
to must be public: an attacker who controls one of several answers chooses where a request
goes. The delivery then connects to the address that was checked, not to the name (which its
owner could make resolve elsewhere a moment later). WEBHOOKS_ALLOW_PRIVATE_URLS lifts the
address rule for receivers on the same host or network (and the tests).
"""
import ipaddress
import socket
from urllib.parse import urlsplit

from ..exceptions import InvalidRequest

MAX_LENGTH = 2048  # webhook_endpoints.url
SCHEMES = ("http", "https")
_SETTING = "set WEBHOOKS_ALLOW_PRIVATE_URLS=true to allow receivers on private networks"


class UnsafeDestination(Exception):
    """A receiver's host resolves to an address webhooks may not reach, or to none."""


def validate(url, *, allow_private):
    """`url` if it may receive webhooks: http or https, a host, no credentials, at most
    MAX_LENGTH characters, and (unless `allow_private`) a host whose every address is public.
    An unresolvable host is refused too. Raises InvalidRequest naming the field `url`."""
    try:
        host, port = _parts(url)
        _check_addresses(host, port, allow_private, resolve_always=True)
    except UnsafeDestination as e:
        raise InvalidRequest(str(e), field="url") from None
    return url


def check_resolved(url, *, allow_private):
    """Before a delivery: raise UnsafeDestination unless every address `url`'s host resolves
    to now is public. Returns the address to connect to, one of those checked; None when
    `allow_private` (any address will do, so the name is connected to as it is)."""
    host, port = _parts(url)
    addresses = _check_addresses(host, port, allow_private, resolve_always=False)
    return addresses[0] if addresses else None


def _parts(url):
    if not isinstance(url, str) or not url:
        raise UnsafeDestination("the URL is empty")
    if len(url) > MAX_LENGTH:
        raise UnsafeDestination(f"the URL is longer than {MAX_LENGTH} characters")
    # Visible ASCII only: a space or control character is a different URL to each parser,
    # and a non-ASCII host is written in its ASCII (punycode) form.
    if not all("!" <= ch <= "~" for ch in url):
        raise UnsafeDestination("the URL must be visible ASCII: percent-encode the path, write the host in punycode")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeDestination(f"the URL is not valid: {e}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise UnsafeDestination("the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise UnsafeDestination("the URL must not carry credentials (user:password@); the signature authenticates "
                                "the service to the receiver")
    if not parts.hostname:
        raise UnsafeDestination("the URL has no host")
    return parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def _check_addresses(host, port, allow_private, *, resolve_always):
    """The addresses `host` resolves to, all of them public; [] when `allow_private` (then
    resolved only if `resolve_always`, to refuse a name that does not resolve)."""
    if allow_private and not resolve_always:
        return []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise UnsafeDestination(f"the host {host!r} does not resolve") from None
    if allow_private:
        return []
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])  # an IPv6 scope id is not part of the address
        if _private(address):
            raise UnsafeDestination(f"the host {host!r} resolves to {address}, a private, loopback, link-local or "
                                    f"otherwise non-public address: {_SETTING}")
        addresses.append(str(address))
    return addresses


def _private(address):
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    # is_global also leaves out the shared (carrier-grade NAT) and documentation ranges that
    # the named properties below do not all cover.
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)

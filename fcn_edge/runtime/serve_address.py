"""The live view's address (``--serve [HOST:]PORT``, ``runtime/serve.py``): parsed, checked by a
trial bind before the model loads, and every bind failure said in one line with what to do."""
from __future__ import annotations

import errno
import ipaddress
import socket

from ..errors import InputError
from .bounds import Bound

__all__ = ["DEFAULT_HOST", "bind_error", "check_address", "family", "is_loopback",
           "parse_address"]

DEFAULT_HOST = "127.0.0.1"
_PORT = Bound(0, 65535, zero="any free port")


def family(host: str) -> socket.AddressFamily:
    """IPv6 for an address written with colons, else IPv4 (names resolve to IPv4)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` → (host, port); ``[::1]:8090`` for IPv6; PORT alone is on 127.0.0.1."""
    text = text.strip()
    host, port = DEFAULT_HOST, text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise InputError(f"--serve {text}: give an IPv6 address as [ADDRESS]:PORT, "
                             f"e.g. [::1]:8090")
        host, port = text[1:end], text[end + 2:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise InputError(f"--serve {text}: put an IPv6 address in brackets, e.g. "
                             f"[{host}]:{port}")
    if not host:
        raise InputError(f"--serve {text}: give HOST:PORT, or PORT alone for {DEFAULT_HOST} "
                         f"(0.0.0.0:PORT listens on every interface)")
    return host, int(_PORT.parse(port, f"--serve {text}: the port"))


def check_address(text: str) -> tuple[str, int]:
    """:func:`parse_address`, then bind and release the address: a port in use, a host that is
    not this machine's or a privileged port is one InputError now, not after the model loads."""
    host, port = parse_address(text)
    with socket.socket(family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError as exc:
            raise bind_error(text, (host, port), exc) from None
    return host, port


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an address) is reachable from this machine only."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def bind_error(text: str, address: tuple[str, int], exc: OSError,
               flag: str = "--serve") -> InputError:
    """The one line for a failed bind of ``text`` (``flag``'s value) to ``address``."""
    host, port = address
    if isinstance(exc, socket.gaierror):
        why, fix = f"no such host ({exc.strerror})", "give an address of this machine"
    elif exc.errno == errno.EADDRINUSE:
        why, fix = f"port {port} is in use", "choose another port, or 0 for any free one"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why, fix = (f"{host} is not an address of this machine",
                    "give one of its addresses, 127.0.0.1, or 0.0.0.0 for every interface")
    elif exc.errno == errno.EACCES:
        why, fix = (f"port {port} needs administrator rights",
                    "choose a port from 1024 to 65535")
    else:
        why, fix = exc.strerror or str(exc), "choose another address"
    return InputError(f"{flag} {text}: cannot listen there: {why}; {fix}")

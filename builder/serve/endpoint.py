"""What may reach the route file: the endpoint URL, the model name and builder's labels (pure).

The route file is an env file that QueryLake reads line by line, and that a
shell (``set -a; . llm.env``), systemd (``EnvironmentFile=``) or python-dotenv
may read too.  A value with a newline (or any line break ``str.splitlines``
knows) would add a line of its own (``LD_PRELOAD=...``); ``$``, a backtick, a
quote or a backslash would be expanded or unquoted by some of those readers.
So every value bound for the file passes the same allow-lists here, whichever
path it came by: ``route init --url/--model``, a journal entry read by
``route rollback``, the service spec (``host``, ``served-model-name``), a slot
record (runtime id, lock hash).  Allow-lists rather than a list of bad
characters: what is not named here cannot slip through.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

#: Characters of a URL builder writes: RFC 3986's unreserved and a few delimiters. No
#: whitespace, control characters, quotes, ``$``, backtick, backslash, ``#``, ``;``, ``?``, ``&``.
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/@%+,=\[\]-]+")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
#: A served model name: a Hugging Face id (``org/name``), a local path, or a plain name.
_MODEL = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9._:/@+=,-]{0,255}")
#: A runtime id or a lock hash, as written in the route file's comments.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]{0,199}")
_SLOT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def shown(value: object, limit: int = 80) -> str:
    """``value`` for a message: quoted, with control characters escaped, cut at ``limit``."""
    text = ascii(value) if isinstance(value, str) else ascii(str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _bad_char(value: str, allowed: re.Pattern[str]) -> str | None:
    for ch in value:
        if not allowed.fullmatch(ch):
            if ch in "\r\n" or ch in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
                return f"contains a line break ({ascii(ch)})"
            if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
                return f"contains a control character ({ascii(ch)})"
            return f"contains {ascii(ch)}"
    return None


def check_host(host: str) -> str | None:
    """Why ``host`` is not a hostname or an IP address, or None."""
    if not host:
        return "is empty"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(host) and len(host) <= 253:
        return None
    bad = _bad_char(host, re.compile(r"[A-Za-z0-9.-]"))
    return f"is not a hostname or an IP address ({bad or 'malformed'}): {shown(host)}"


def split_url(url: str) -> tuple[str, str, int, str]:
    """``http[s]://host:port[/path][/v1]`` -> (scheme, host, port, root path without ``/v1``).

    Raises ValueError naming what is wrong: not http(s), a character outside
    the allow-list (line breaks, control characters, quotes, ``$`` ...),
    credentials, a query or fragment, a bad host or port.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("the URL is empty")
    bad = _bad_char(url, _URL_CHARS)
    if bad and "://" in url and url.split("://", 1)[0].lower() not in ("http", "https"):
        bad = None  # report the scheme, the clearer problem
    if bad:
        raise ValueError(f"the URL {bad}: {shown(url)}")
    u = urlsplit(url if "://" in url else f"http://{url}")
    if u.scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs are supported, got {shown(url)}")
    if u.username is not None or u.password is not None:
        raise ValueError(f"the URL carries credentials ({shown(url)}): builder writes it into the route file; "
                         "give the key with api-key-env instead")
    if u.query or u.fragment:
        raise ValueError(f"the URL has a query or fragment: {shown(url)}")
    host = u.hostname or ""
    why = check_host(host)
    if why:
        raise ValueError(f"the URL's host {why}" if host else f"the URL has no host: {shown(url)}")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"the URL's port is not a TCP port (1-65535): {shown(url)}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"the URL's port is not a TCP port (1-65535): {shown(url)}")
    path = u.path.rstrip("/")
    path = path[:-3] if path.endswith("/v1") else path
    return u.scheme, host, port, path


def api_url(url: str) -> str:
    """The OpenAI base URL (``.../v1``) of a server URL given with or without ``/v1``."""
    scheme, host, port, root = split_url(url)
    h = f"[{host}]" if ":" in host else host
    return f"{scheme}://{h}:{port}{root}/v1"


def check_model(name: object) -> str | None:
    """Why ``name`` cannot be a served model name in the route file, or None."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if _MODEL.fullmatch(name):
        return None
    bad = _bad_char(name, re.compile(r"[A-Za-z0-9._:/@+=,-]"))
    if bad is None:
        return f"must start with a letter, digit, '_' or '/' and be at most 256 characters: {shown(name)}"
    return f"{bad}; a model name is letters, digits and . _ : / @ + = , -: {shown(name)}"


def check_label(kind: str, value: object) -> str | None:
    """Why ``value`` cannot be the route file's ``kind`` comment (slot, runtime, lock), or None."""
    if value is None:
        return None
    pattern = _SLOT if kind == "slot" else _LABEL
    if isinstance(value, str) and pattern.fullmatch(value):
        return None
    return f"{kind} {shown(value)} is not a {kind} name builder writes"


#: Where a routed runtime came from (:mod:`builder.runtime.manifest`'s origins).
ORIGINS = ("lock", "adopted")


def route_problems(*, url: object, model: object, slot: object = None, runtime: object = None,
                   lock: object = None, origin: object = None) -> list[str]:
    """Every reason the route (url, model and labels) must not be written, as ``field: why``."""
    out: list[str] = []
    try:
        if not isinstance(url, str):
            raise ValueError("the URL is not a string")
        if api_url(url) != url:
            raise ValueError(f"the URL is not in builder's form (http[s]://host:port[/path]/v1): {shown(url)}")
    except ValueError as exc:
        out.append(f"url: {exc}")
    why = check_model(model)
    if why:
        out.append(f"model: {why}")
    for kind, value in (("slot", slot), ("runtime", runtime), ("lock", lock)):
        why = check_label(kind, value)
        if why:
            out.append(f"{kind}: {why}")
    if origin is not None and origin not in ORIGINS:
        out.append(f"origin: must be one of {', '.join(ORIGINS)}, got {shown(str(origin))}")
    return out

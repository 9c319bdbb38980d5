"""Install progress from ``uv pip sync``'s own output lines (pure).

When its stderr is not a terminal (builder always reads it through a pipe), uv
shows no bars; it writes a line when a download over 1 MiB starts and ends
(astral-sh/uv#11165) and one summary line per phase.  Real output of uv 0.13.9
(``tests/data/uv/``)::

    Resolved 3 packages in 28ms
    Downloading bigtwo (2.9MiB)
     Downloaded bigtwo
    Prepared 3 packages in 34ms
    Installed 3 packages in 4ms
     + bigtwo==1.0 (from http://...)

:class:`InstallProgress` turns those into progress lines with counts and bytes
(the exact size of each wheel from the lock, uv's rounded size when the lock
has none).  The same plain lines serve a terminal and a CI log: no carriage
returns, and one line per large file at most.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from builder.report import Say

_DOWNLOADING = re.compile(r"^Downloading (?P<name>\S+) \((?P<size>[0-9.]+ ?[KMGT]?i?B)\)$")
_DOWNLOADED = re.compile(r"^Downloaded (?P<name>\S+)$")
_PHASE = re.compile(r"^(?P<what>Prepared|Installed|Uninstalled) (?P<n>\d+) packages? in (?P<time>.+)$")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def _key(name: str) -> str:
    # PEP 503 normalisation, as packaging.utils.canonicalize_name does (kept here: this
    # module runs once per uv line and needs nothing else from packaging).
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_size(text: str) -> int | None:
    """Bytes of uv's ``2.9MiB`` (binary units) or ``12B``; None if unreadable."""
    m = re.fullmatch(r"([0-9.]+) ?([KMGT]?i?B)", text.strip())
    if m is None or m.group(2) not in _UNITS:
        return None
    try:
        return int(float(m.group(1)) * _UNITS[m.group(2)])
    except ValueError:
        return None


def human(n: int) -> str:
    """``4.9 GiB``, ``846.8 MiB``, ``12 KiB`` (uv's binary units)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass
class InstallProgress:
    """Feed it uv's lines (``feed``); it calls ``say`` with one progress line per event.

    ``sizes`` maps package names to the bytes of the wheel the lock installs.
    """

    say: Say
    sizes: Mapping[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)

    def feed(self, stream: str, line: str) -> None:
        if stream != "stderr":
            return
        text = line.strip()
        m = _DOWNLOADING.match(text)
        if m is not None:
            key = _key(m.group("name"))
            self.started[key] = self.sizes.get(key) or parse_size(m.group("size")) or 0
            if len(self.started) == 1:
                self.say("downloading the wheels uv's cache lacks (each file over 1 MiB is reported)")
            return
        m = _DOWNLOADED.match(text)
        if m is not None:
            key = _key(m.group("name"))
            size = self.started.get(key, self.sizes.get(key, 0))
            self.finished[key] = size
            done, total = sum(self.finished.values()), sum(self.started.values())
            # "of" counts the downloads uv has started so far (it starts most of them at once).
            self.say(f"downloaded {m.group('name')} ({human(size)}): {len(self.finished)}/{len(self.started)} "
                     f"large files, {human(done)}/{human(total)}")
            return
        m = _PHASE.match(text)
        if m is not None:
            what = {"Prepared": "prepared (downloaded, unpacked)", "Installed": "installed",
                    "Uninstalled": "uninstalled"}[m.group("what")]
            self.say(f"{what} {m.group('n')} packages in {m.group('time')}")

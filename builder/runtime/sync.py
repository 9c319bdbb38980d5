"""Installing a validated lock into an environment with ``uv pip sync``.

The requirements handed to uv come from the :class:`builder.pylock.Lock` model
that was validated (fresh, every wheel hashed), never from a second read of the
file: one hashed direct-URL requirement per package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from builder import _proc, paths, pylock
from builder.errors import BuildError, FilesystemRefused, ToolFailed, Unavailable
from builder.report import Say
from builder.runtime.installprogress import InstallProgress, human

SYNC_TIMEOUT = 3600.0  # a cold matrix download is ~5 GB (README, "On a fresh machine")


def picked_wheels(lock: pylock.Lock, version: str) -> list[tuple[pylock.Package, pylock.Wheel]]:
    """(package, wheel) for every package: the lock's best wheel for this host's CPython ``version``.

    A package with no wheel for the host is an error unless its marker may
    exclude it here (then its first wheel stands in; uv evaluates the marker).
    """
    tags = pylock.host_tags(version)
    out: list[tuple[pylock.Package, pylock.Wheel]] = []
    for p in lock.packages:
        best = p.pick_wheel(tags)
        if best is None:
            if p.marker is None:
                raise BuildError(f"{Path(lock.where).name}: {p.name} {p.version} has no wheel for Python "
                                 f"{version} on this host", "re-lock for this platform")
            if not p.wheels:
                continue
            best = p.wheels[0]  # excluded by its marker here; uv skips it
        out.append((p, best))
    return out


def pinned_requirements(lock: pylock.Lock, version: str,
                        picked: list[tuple[pylock.Package, pylock.Wheel]] | None = None) -> str:
    """The lock as a hashed requirements file: one direct wheel URL per package.

    uv 0.13.9 installing ``pylock.toml`` directly revalidates every wheel URL and
    stores a fresh copy in its cache on each install (measured: +9.86 GB of
    cache per matrix-B runtime), so runtimes could not share files.  Direct
    URL requirements with ``--hash`` are served from the cache and hardlinked.
    The wheel is the lock's best match for the target interpreter (``picked``:
    :func:`picked_wheels`, if the caller has it); markers are kept for uv to
    evaluate against it.
    """
    lock_dir = Path(lock.where).parent
    lines: list[str] = []
    for p, best in picked if picked is not None else picked_wheels(lock, version):
        url = best.url if best.url else (lock_dir / (best.path or best.filename)).resolve().as_uri()
        hashes = " ".join(f"--hash={algo}:{digest}" for algo, digest in sorted(best.hashes.items()))
        marker = f" ; {p.marker}" if p.marker is not None else ""
        lines.append(f"{p.name} @ {url}{marker} {hashes}")
    return "\n".join(lines) + "\n"


def sync_argv(uv: str, python: Path, requirements: Path, *, cache_dir: str | None) -> list[str]:
    """``uv pip sync`` of pinned, hashed wheel URLs: hardlinks, no config, no builds, no index."""
    argv = [uv, "pip", "sync", str(requirements), "--python", str(python),
            "--require-hashes", "--no-build", "--strict", "--no-index",
            # hardlink from uv's cache (uv falls back to copying across
            # filesystems); never symlink: the cache may be pruned.
            "--link-mode", "hardlink",
            "--no-config", "--no-python-downloads", "--no-progress"]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    return argv


def sync(uv: str, python: Path, version: str, *, lock: pylock.Lock, cache_dir: str | None,
         env: Mapping[str, str], progress: Say | None = None,
         picked: list[tuple[pylock.Package, pylock.Wheel]] | None = None) -> float:
    """Install ``lock`` into the environment of ``python``; seconds taken, or a typed error.

    ``picked``: :func:`picked_wheels` of ``lock``, if the caller has it already.
    ``progress`` gets one line per event: the start (packages, bytes), each large
    download uv reports, and uv's phase summaries (:mod:`builder.runtime.installprogress`).
    """
    on_line = None
    picked = picked if picked is not None else picked_wheels(lock, version)
    if progress is not None:
        sizes = {p.name: w.size for p, w in picked if w.size}
        progress(f"installing {len(picked)} packages ({human(sum(sizes.values()))} of wheels; "
                 "uv downloads what its cache lacks)")
        on_line = InstallProgress(progress, sizes).feed
    with paths.temp_dir("builder-sync-") as tmp:
        reqs = tmp / "requirements.txt"
        reqs.write_text(pinned_requirements(lock, version, picked), encoding="utf-8")
        res = _proc.run(sync_argv(uv, python, reqs, cache_dir=cache_dir), timeout=SYNC_TIMEOUT, env=env,
                        what="uv pip sync", on_line=on_line)
    if res.ok:
        return res.duration
    from builder.lock.uv import NETWORK_ERROR, summarize

    tail = summarize(res.stderr)  # uv's multi-line report as one line
    if res.timed_out:
        raise ToolFailed(f"uv pip sync did not finish within {SYNC_TIMEOUT:g}s", "check the network")
    if "hash mismatch" in res.stderr.lower() or "size mismatch" in res.stderr.lower():
        raise BuildError(f"a downloaded file does not match the lock's hash: {tail}",
                         "the index or the lock was altered; re-lock from a trusted index")
    if "Failed to extract archive" in res.stderr:
        raise BuildError(f"a downloaded file is corrupt: {tail}",
                         "the index serves a damaged or altered file; re-lock from a trusted index")
    if NETWORK_ERROR.search(res.stderr):
        raise Unavailable(f"uv could not download the locked files: {tail}",
                          "check the network; a warm uv cache (--cache-dir) avoids downloads")
    refused = FilesystemRefused.from_tool_output(res.stderr, python.parent.parent, "install into")
    if refused is not None:
        raise refused
    raise ToolFailed(f"uv pip sync failed (exit {res.returncode}): {tail}",
                     returncode=res.returncode, stderr_tail=tail)

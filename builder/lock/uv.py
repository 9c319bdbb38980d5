"""Locking one (matrix, Python) with ``uv pip compile --format pylock.toml``.

Everything uv needs is passed on the command line with ``--no-config``; the
environment is scrubbed of ``UV_*``/``PIP_*`` by the subprocess wrapper, so a
stray ``uv.toml`` or ``UV_INDEX_URL`` cannot change what gets locked.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder import _proc, paths, pylock
from builder.errors import FilesystemRefused, LockFileError, SdistOnly, ToolFailed, Unavailable
from builder.spec import Matrix

if TYPE_CHECKING:
    import threading

#: uv is given this long per lock before it is killed.
UV_TIMEOUT = 900.0

NETWORK_ERROR = re.compile(
    r"(dns error|failed to connect|Could not connect|Connection refused|timed out|"
    r"Network is unreachable|error sending request|Failed to fetch|tcp connect error|"
    # uv words an index's HTTP 401/403 as "not found" plus this hint: data unavailable, not the spec.
    r"An index \([^)]*\) returned a \d{3}\b)",
    re.I,
)

#: What uv 0.13 says when the index answered, but not with an index page: another content type
#: (a login or error page of a proxy), none (uv gives up after 10 redirects and shows the last
#: 302 so), or a body it cannot parse.  The index is unusable now: data unavailable, not the pins.
INDEX_ANSWER_ERROR = re.compile(
    r"(Unsupported `Content-Type`|Missing `Content-Type` header|Received some unexpected (JSON|HTML)|"
    r"too many redirects|redirect loop)",
    re.I,
)

_NO_WHEEL = re.compile(r"Wheels are required for `([^`]+)`")
#: What uv 0.13 says when ``--offline`` needs something its cache lacks.
OFFLINE_MISS = re.compile(r"(was not found in the cache|because the network was disabled|"
                          r"network connectivity is disabled)", re.I)


@dataclass(frozen=True)
class CompileResult:
    body: str
    argv: tuple[str, ...]  # with temp paths replaced by placeholders
    seconds: float
    lock: pylock.Lock  # ``body`` parsed and validated (as the wheel check below read it)


def compile_argv(
    uv: str, matrix: Matrix, python: str, *, workdir: Path, offline: bool = False,
    cache_dir: str | None = None,
) -> list[str]:
    """The full uv command; inputs are written into ``workdir``."""
    (workdir / "requirements.in").write_text("\n".join(matrix.requirements()) + "\n")
    argv = [
        uv, "pip", "compile", str(workdir / "requirements.in"),
        "--format", "pylock.toml",
        "--output-file", str(workdir / "pylock.toml"),
        "--no-header", "--no-config", "--quiet", "--no-python-downloads",
        "--python-version", python,
        "--python-platform", matrix.platform,
        "--exclude-newer", matrix.exclude_newer,
        # Resolution must never run arbitrary build code on this machine.
        "--no-build",
        "--index-url", matrix.index_url,
    ]
    for url in matrix.index_urls():
        argv += ["--extra-index-url", url]
    if matrix.index_urls():
        # torch+cuXYZ lives on its own index; let uv pick the best match anywhere.
        argv += ["--index-strategy", "unsafe-best-match"]
    for fl in matrix.find_links:
        argv += ["--find-links", fl]
    if matrix.overrides:
        (workdir / "overrides.txt").write_text("\n".join(matrix.overrides) + "\n")
        argv += ["--overrides", str(workdir / "overrides.txt")]
    if matrix.constraints:
        (workdir / "constraints.txt").write_text("\n".join(matrix.constraints) + "\n")
        argv += ["--constraints", str(workdir / "constraints.txt")]
    # Machine- and run-specific settings go last: public_argv() drops them for the stamp.
    # An explicit interpreter spares uv its discovery (pyenv shims cost ~0.4 s);
    # with --python-version/--python-platform and --no-build it does not change
    # the resolution.
    argv += ["--python", sys.executable]
    if offline:
        argv.append("--offline")
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    return argv


def public_argv(argv: list[str], workdir: Path) -> tuple[str, ...]:
    """The command as recorded in a lock: no temp paths, no machine-specific flags."""
    cut = argv.index("--python")
    return ("uv", *(a.replace(str(workdir) + os.sep, "") for a in argv[1:cut]))


def uv_env() -> dict[str, str]:
    """Scrubbed environment for uv; the (gated) cache is passed with --cache-dir instead.

    ``TZ=UTC``: uv reads ``--exclude-newer 2025-12-30`` as "uploaded before the end
    of that day" in the *local* time zone (checked with uv 0.13.9), so without it
    the same spec could lock differently in Tokyo and in CI.
    """
    return _proc.clean_env(extra={"NO_COLOR": "1", "TZ": "UTC"})


_MARKERS = ("error:", "cause:", "hint:", "×", "╰─▶")


def summarize(stderr: str, limit: int = 400) -> str:
    """uv's multi-line error as one line: the error, its causes and hint.

    uv wraps a long message at the terminal's width (``$COLUMNS``), indenting the rest: an
    indented line that starts no new part is joined back to the one before it.
    """
    lines: list[str] = []
    for raw in stderr.strip().splitlines():
        ln = raw.strip()
        if not ln:
            continue
        if lines and raw[:1].isspace() and not ln.startswith(_MARKERS):
            lines[-1] += " " + ln
        else:
            lines.append(ln)
    keep = [ln for ln in lines if ln.startswith(_MARKERS)] or lines[-3:]
    text = " ".join(keep).replace("error: ", "", 1)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sdist_only(lock: pylock.Lock) -> list[str]:
    """Names of packages in a lock that have no wheel (would build on the host)."""
    return sorted(f"{p.name} {p.version}".strip() for p in lock.source_only())


def compile_lock(
    uv: str, matrix: Matrix, python: str, *, offline: bool = False, cache_dir: Path | None = None,
    started: threading.Event | None = None, stop: threading.Event | None = None,
) -> CompileResult:
    """Resolve one lock; raise a typed error on any failure.

    ``cache_dir`` is uv's cache as the write gate approved it
    (:func:`builder.paths.uv_cache`); None lets the gate pick it here.  ``started`` is set
    once uv runs; setting ``stop`` kills it (:class:`~builder.errors.Dropped`: :func:`builder._proc.run`).
    """
    if cache_dir is None:
        cache_dir = paths.uv_cache()
    with paths.temp_dir("builder-lock-") as work:
        argv = compile_argv(uv, matrix, python, workdir=work, offline=offline, cache_dir=str(cache_dir))
        res = _proc.run(argv, timeout=UV_TIMEOUT, env=uv_env(), what="uv pip compile", started=started,
                        stop=stop)
        target = f"{matrix.name} py{python}"
        if res.missing:
            raise ToolFailed(f"uv not runnable: {uv}")
        if res.timed_out:
            raise ToolFailed(f"{target}: uv pip compile did not finish in {UV_TIMEOUT:g}s",
                             "check the network and retry")
        if res.returncode != 0:
            tail = summarize(res.stderr)
            flat = " ".join(res.stderr.split())  # uv's words, whatever width it wrapped them at
            refused = FilesystemRefused.from_tool_output(res.stderr, cache_dir, "use the uv cache at")
            if refused is not None:
                raise refused
            if offline and OFFLINE_MISS.search(flat):
                raise Unavailable(f"{target}: uv's cache does not hold what this lock needs, and --offline "
                                  f"forbids the network: {tail}",
                                  "run `builder lock` online once to fill the cache, then --offline works")
            if NETWORK_ERROR.search(flat):
                raise Unavailable(f"{target}: uv could not reach the package index: {tail}",
                                  "check the network (or use --offline with a warm cache)")
            if INDEX_ANSWER_ERROR.search(flat):
                raise Unavailable(f"{target}: the package index did not answer with an index page: {tail}",
                                  "check the index URL and any proxy in between, then retry")
            no_wheel = sorted(set(_NO_WHEEL.findall(flat)))
            if no_wheel:
                raise SdistOnly(
                    f"{target}: no wheel for {matrix.platform} / Python {python}, only source "
                    f"distributions: {', '.join(no_wheel)}",
                    "the lock would compile them on the host; pin versions that ship wheels "
                    "or target a platform they support",
                )
            raise ToolFailed(f"{target}: uv could not resolve the spec: {tail}",
                             "adjust the pins or overrides in the spec",
                             returncode=res.returncode, stderr_tail=tail)
        body = (work / "pylock.toml").read_text(encoding="utf-8")
        shown = public_argv(argv, work)
    try:
        lock = pylock.parse(body.encode(), f"{target} (uv's output)")
    except LockFileError as exc:
        raise LockFileError(f"uv wrote an unreadable lock: {exc.message}") from None
    missing = sdist_only(lock)
    if missing:
        raise SdistOnly(
            f"{target}: resolves to source distributions only for {matrix.platform}: "
            + ", ".join(missing),
            "the lock would compile them on the host; pin versions that ship wheels "
            "or target a platform they support",
        )
    return CompileResult(body=body, argv=shown, seconds=res.duration, lock=lock)

"""Finding a Python X.Y interpreter to base a runtime on.

Discovery order (first verified candidate wins; every rejected one is
reported with its reason):

1. ``--interpreter PATH`` given by the user (must be Python X.Y, or it fails);
2. ``pythonX.Y`` on ``PATH`` (the scrubbed PATH: an active venv/conda env's
   ``bin`` is not searched);
3. pyenv's installed versions: ``$PYENV_ROOT`` or ``pyenv root``, then
   ``versions/X.Y.*/bin/pythonX.Y``, newest patch first;
4. uv-managed Pythons: ``uv python find --managed-python --no-python-downloads X.Y``.

A candidate counts only once it ran and reported the wanted version; an
interpreter living inside a protected environment (QL_1) is never used: the
runtime would depend on the production env's files.  Nothing is downloaded.

Candidates are produced lazily: a step runs (``pyenv root``, ``uv python
find``) only when the ones before it found nothing.  A pyenv *shim* found on
``PATH`` is not run in step 2: it is a bash script that re-runs pyenv (about
0.3 s) and fails unless that version is pyenv's selected one, while step 3
reaches pyenv's versions directly.  It is tried last, so an interpreter only a
shim knows (pyenv's ``system``) is still found.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder import _proc
from builder.errors import ToolNotFound, UsageError
from builder.protect import Protected

# A venv is told by the pyvenv.cfg beside its bin/ (sys.prefix says nothing under -S);
# sys._base_executable is then the interpreter it was made from.  One value per line,
# paths last; no json: importing it (and re) doubles the probe's 20 ms.
PROBE = (
    "import os, sys; e = sys.executable; "
    "v = os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(e)), 'pyvenv.cfg')); "
    "print('%d.%d.%d' % sys.version_info[:3], sys.implementation.name, int(v), e,"
    " getattr(sys, '_base_executable', e), sep='\\n')"
)
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Interpreter:
    """A verified interpreter: where it is, its version, and why it was chosen."""

    path: str  # sys.executable as the interpreter reports it
    version: str  # "3.12.1"
    source: str  # "interpreter" | "path" | "pyenv" | "uv"
    reason: str
    rejected: tuple[tuple[str, str], ...] = field(default=())  # (candidate, why not)

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "version": self.version, "source": self.source,
                "reason": self.reason, "rejected": [list(r) for r in self.rejected]}


def probe(exe: str, env: Mapping[str, str] | None = None) -> tuple[str, str, str, str | None] | str:
    """(version, implementation, sys.executable, base interpreter if ``exe`` is a venv's)
    of ``exe``, or a reason it failed."""
    res = _proc.run([exe, "-I", "-S", "-c", PROBE], timeout=PROBE_TIMEOUT,
                    env=env if env is not None else _proc.clean_env(), what=f"{exe} (probe)")
    if res.missing:
        return "not found or not executable"
    if not res.ok:
        tail = res.brief(2)
        return "timed out" if res.timed_out else f"exit {res.returncode}: {tail}"
    lines = res.stdout.split("\n")
    if len(lines) != 6 or lines[5] != "" or lines[2] not in ("0", "1"):
        return f"unexpected output: {res.stdout.strip()[:80]}"
    version, impl, in_venv, executable, base = lines[:5]
    return version, impl, executable, (base if in_venv == "1" else None)


def _identity(exe: str) -> str | None:
    """What the probe's answer depends on, as a memo key; None when it cannot be pinned down.

    The answer (version, implementation, sys.executable, venv base) is the binary's and
    the venv's: the path as given, the real file's inode, size, mtime and ctime (a
    reinstall changes them), and the ``pyvenv.cfg`` the probe looks at.  Only an ELF
    executable is kept: a script (a wrapper, a shim) may run another interpreter next
    time without changing itself.  uv keys its own interpreter cache the same way
    (executable path and modification time).
    """
    try:
        real = os.path.realpath(exe)
        with open(real, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            st = os.fstat(f.fileno())
    except OSError:
        return None
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(exe))), "pyvenv.cfg")
    try:
        c = os.stat(cfg)
        venv = f"{c.st_ino}:{c.st_size}:{c.st_mtime_ns}:{c.st_ctime_ns}"
    except OSError:
        venv = "-"
    probe_id = hashlib.sha256(PROBE.encode()).hexdigest()[:16]
    return "|".join((probe_id, os.path.abspath(exe), real, f"{st.st_dev}:{st.st_ino}:{st.st_size}:"
                     f"{st.st_mtime_ns}:{st.st_ctime_ns}", venv))


def probe_kept(exe: str, env: Mapping[str, str] | None, cache: Path | None) -> tuple[str, str, str, str | None] | str:
    """:func:`probe`, answered from ``cache`` when this very file answered before
    (a warm build skips starting the interpreter; a failed probe is never kept)."""
    key = _identity(exe) if cache is not None else None
    if cache is None or key is None:
        return probe(exe, env)
    from builder import memo

    kept = memo.get_json(cache, "interpreters", key)
    if (isinstance(kept, list) and len(kept) == 4 and all(isinstance(x, str) for x in kept[:3])
            and (kept[3] is None or isinstance(kept[3], str))):
        return kept[0], kept[1], kept[2], kept[3]
    got = probe(exe, env)
    if not isinstance(got, str):
        memo.keep_json(cache, "interpreters", key, value=list(got))
    return got


def pyenv_root(env: Mapping[str, str]) -> Path | None:
    """``$PYENV_ROOT``, else what ``pyenv root`` says, else None."""
    if env.get("PYENV_ROOT"):
        return Path(env["PYENV_ROOT"])
    res = _proc.run(["pyenv", "root"], timeout=PROBE_TIMEOUT, env=env, what="pyenv root")
    return Path(res.stdout.strip()) if res.ok and res.stdout.strip() else None


def _patch_key(p: Path) -> tuple[int, ...]:
    nums = re.findall(r"\d+", p.name)
    return tuple(int(n) for n in nums)


def is_pyenv_shim(path: str) -> bool:
    """True for pyenv's shim script (``exec ".../libexec/pyenv" exec "$program" "$@"``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return head.startswith(b"#!") and b"/libexec/pyenv" in head


def candidates(python: str, env: Mapping[str, str], uv: str | None) -> Iterator[tuple[str, str]]:
    """(source, path) candidates in discovery order (not yet verified), produced lazily.

    Source ``"shim"`` is a notice, not a candidate: a pyenv shim on PATH, put last.
    """
    exe = f"python{python}"
    on_path = _proc.which(exe, path=env.get("PATH"))
    shim = on_path if on_path and is_pyenv_shim(on_path) else None
    if on_path:
        yield ("shim" if shim else "path"), on_path
    root = pyenv_root(env)
    if root is not None:
        versions = sorted((root / "versions").glob(f"{python}.*"), key=_patch_key, reverse=True)
        for v in versions:
            # Only plain CPython X.Y.Z directories (not 3.12-dev or envs named 3.12.1/envs/x).
            if re.fullmatch(rf"{re.escape(python)}\.\d+", v.name) and (v / "bin" / exe).exists():
                yield "pyenv", str(v / "bin" / exe)
    if uv:
        res = _proc.run([uv, "python", "find", "--managed-python", "--no-python-downloads",
                         "--no-config", "--no-project", python],
                        timeout=PROBE_TIMEOUT, env=env, what="uv python find")
        if res.ok and res.stdout.strip():
            yield "uv", res.stdout.strip().splitlines()[-1]
    if shim is not None:
        yield "path", shim


def find(
    python: str,
    *,
    explicit: str | None = None,
    protected: Protected | None = None,
    uv: str | None = None,
    env: Mapping[str, str] | None = None,
    cache: Path | None = None,
) -> Interpreter:
    """Find and verify a CPython ``python`` (``"3.12"``) interpreter.

    ``cache``: builder's cache directory, where probe answers are kept (:func:`probe_kept`).
    """
    env = dict(env) if env is not None else _proc.clean_env()
    rejected: list[tuple[str, str]] = []

    def verify(source: str, path: str) -> Interpreter | None:
        if protected is not None:
            for p in (path, os.path.realpath(path)):
                hit = protected.match(p)
                if hit is not None:
                    rejected.append((path, f"inside the protected {hit.why}"))
                    return None
        got = probe_kept(path, env, cache)
        if isinstance(got, str):
            rejected.append((path, got))
            return None
        version, impl, executable, venv_base = got
        if venv_base is not None and source != "interpreter":
            # Another virtualenv's python (e.g. nox's session venv on PATH): base the
            # runtime on that venv's own base interpreter instead, never on a venv.
            rejected.append((path, f"belongs to a virtualenv; using its base interpreter {venv_base}"))
            return verify(source, venv_base) if venv_base != path else None
        if impl != "cpython":
            rejected.append((path, f"{impl}, not CPython"))
            return None
        if ".".join(version.split(".")[:2]) != python:
            rejected.append((path, f"is Python {version}, not {python}"))
            return None
        if protected is not None and protected.match(executable) is not None:
            rejected.append((path, f"resolves into a protected env ({executable})"))
            return None
        why = {
            "interpreter": "given with --interpreter",
            "path": f"python{python} on PATH",
            "pyenv": "installed by pyenv",
            "uv": "managed by uv",
        }[source]
        return Interpreter(executable, version, source, why, tuple(rejected))

    if explicit is not None:
        found = verify("interpreter", explicit)
        if found is None:
            raise UsageError(f"--interpreter {explicit} cannot be used: {rejected[-1][1]}",
                             f"pass a CPython {python} executable")
        return found
    for source, path in candidates(python, env, uv):
        if source == "shim":
            rejected.append((path, "a pyenv shim: pyenv's versions are searched directly, the shim last"))
            continue
        found = verify(source, path)
        if found is not None:
            return found
    tried = "; ".join(f"{p}: {why}" for p, why in rejected) or "no candidates"
    raise ToolNotFound(
        f"no usable Python {python} found (tried PATH, pyenv, uv-managed: {tried})",
        f"install it (`pyenv install {python}` or `uv python install {python}`) "
        "or pass --interpreter PATH",
    )

"""The one subprocess wrapper.  No other builder module imports ``subprocess``.

Every child runs in its own process group with a hard timeout.  On timeout the
whole group gets SIGTERM, then SIGKILL, and every wait afterwards is bounded:
a child stuck in uninterruptible sleep (a hung ``nvidia-smi``) cannot be reaped
and is abandoned rather than waited for (``subprocess.run(timeout=...)`` would
block forever in that case, see FACTS.md).

The environment handed to children is scrubbed of settings that would make a
tool act on something other than what builder passes explicitly.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from builder.errors import ToolFailed, ToolNotFound, ToolTimeout

log = logging.getLogger("builder.proc")

#: How long to wait for a group to die after SIGTERM, then after SIGKILL.
TERM_GRACE = 1.0
KILL_GRACE = 1.0

#: Exact variable names that are never inherited by a child.
SCRUBBED = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONEXECUTABLE",
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "CONDA_PROMPT_MODIFIER",
        "CONDA_SHLVL",
        "CONDA_PYTHON_EXE",
        "__PYVENV_LAUNCHER__",
        "PIP_REQUIRE_VIRTUALENV",
    }
)
#: Prefixes of variable names that are never inherited by a child.
SCRUBBED_PREFIXES = ("UV_", "PIP_", "CONDA_PREFIX_")


@dataclass(frozen=True)
class Result:
    """What a child did.  ``returncode`` is None when it was killed or missing."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.missing

    def stderr_tail(self, lines: int = 12) -> str:
        return "\n".join(self.stderr.strip().splitlines()[-lines:])

    def brief(self, lines: int = 3) -> str:
        """The last lines of stderr as one line, for a one-line error message."""
        return " | ".join(x.strip() for x in self.stderr_tail(lines).splitlines() if x.strip())


def clean_env(
    base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return ``base`` (default ``os.environ``) without inherited tool settings.

    Also drops the bin directories of an active virtualenv or conda env from
    PATH, so a bare ``python`` cannot resolve into the operator's environment.
    """
    src = dict(os.environ if base is None else base)
    active = [src[k] for k in ("VIRTUAL_ENV", "CONDA_PREFIX") if src.get(k)]
    env = {
        k: v
        for k, v in src.items()
        if k not in SCRUBBED and not k.startswith(SCRUBBED_PREFIXES)
    }
    if active and "PATH" in env:
        drop = {os.path.join(a, "bin") for a in active}
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if p.rstrip("/") not in drop
        )
    env["PYTHONNOUSERSITE"] = "1"
    if extra:
        env.update(extra)
    return env


def which(name: str, path: str | None = None) -> str | None:
    """Resolve an executable name (or return an absolute path that exists)."""
    if os.sep in name:
        # Absolute, so a child started with another cwd still finds it.
        return os.path.abspath(name) if os.access(name, os.X_OK) else None
    return shutil.which(name, path=path)


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _bounded_communicate(
    proc: subprocess.Popen[bytes], timeout: float, reader: _LineReader | None = None
) -> tuple[bytes, bytes] | None:
    try:
        return reader.communicate(timeout) if reader is not None else proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


LineCallback = Callable[[str, str], None]
"""Called with ``("stdout" | "stderr", line)`` for every non-empty line a child writes."""


class _LineReader:
    """Reads a child's stdout and stderr on threads, handing each line to a callback as it arrives.

    It stands in for ``Popen.communicate`` when a caller wants progress while the
    child runs.  The threads read duplicates of the pipe descriptors (the Popen's
    own streams are closed at once), so :func:`run` may give up on a pipe that a
    grandchild holds open: the daemon thread is abandoned, like the zombie.
    Callbacks run one at a time; one that raises is switched off (progress must
    never fail the work) and the output is still collected whole.
    """

    def __init__(self, proc: subprocess.Popen[bytes], on_line: LineCallback, data: bytes | None) -> None:
        self.proc = proc
        self.on_line: LineCallback | None = on_line
        self.chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert stream is not None
            fd = os.dup(stream.fileno())
            stream.close()
            self.threads.append(threading.Thread(target=self._read, args=(name, fd), daemon=True))
        if proc.stdin is not None:
            fd = os.dup(proc.stdin.fileno())
            proc.stdin.close()
            threading.Thread(target=self._write, args=(fd, data or b""), daemon=True).start()
        for t in self.threads:
            t.start()

    def _write(self, fd: int, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            pass  # the child closed stdin or died: as communicate() does, ignore it
        finally:
            os.close(fd)

    def _read(self, name: str, fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                self.chunks[name].append(chunk)
                *lines, pending = (pending + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    self._emit(name, line)
            self._emit(name, pending)
        finally:
            os.close(fd)

    def _emit(self, name: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        with self.lock:
            if self.on_line is None:
                return
            try:
                self.on_line(name, text)
            except Exception as exc:  # see the class docstring
                log.debug("line callback failed, switched off: %r", exc)
                self.on_line = None

    def communicate(self, timeout: float) -> tuple[bytes, bytes]:
        """Wait (bounded) for both pipes to close and the child to exit; TimeoutExpired if not."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
        self.proc.wait(max(0.0, deadline - time.monotonic()))
        return b"".join(self.chunks["stdout"]), b"".join(self.chunks["stderr"])


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    check: bool = False,
    what: str | None = None,
    on_line: LineCallback | None = None,
) -> Result:
    """Run ``argv`` with a hard ``timeout`` (seconds).

    Never raises for a missing tool, a non-zero exit or a timeout unless
    ``check`` is true; then it raises ToolNotFound, ToolFailed or ToolTimeout
    naming ``what`` (default: the program name) with the tail of stderr.
    ``env`` is used as given; callers build it with :func:`clean_env`.
    ``on_line`` (optional) gets each output line as it arrives (on a reader
    thread); the Result still holds the whole output.
    """
    argv = tuple(str(a) for a in argv)
    label = what or os.path.basename(argv[0])
    exe = which(argv[0], path=(env or os.environ).get("PATH"))
    if exe is None:
        res = Result(argv, None, "", f"{argv[0]}: not found", 0.0, missing=True)
        if check:
            raise ToolNotFound(f"{label} not found: {argv[0]}", "install it or put it on PATH")
        return res
    log.debug("run %s (timeout %.1fs)", shlex.join(argv), timeout)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            (exe, *argv[1:]),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
            start_new_session=True,
        )
    except OSError as exc:  # not executable, bad interpreter line, cwd gone ...
        res = Result(argv, None, "", f"{argv[0]}: cannot run: {exc.strerror or exc}", 0.0, missing=True)
        if check:
            raise ToolNotFound(f"{label} cannot be run: {exc.strerror or exc}",
                               "check that it exists and is executable") from None
        return res
    timed_out = False
    data = None
    reader = None
    try:
        if on_line is not None:
            reader = _LineReader(proc, on_line, input.encode() if input is not None else None)
            data = reader.communicate(timeout)
        else:
            data = proc.communicate(
                input.encode() if input is not None else None, timeout=timeout
            )
    except subprocess.TimeoutExpired:
        timed_out = True
    except BaseException:
        # Ctrl-C or similar: never leave the child group running behind us.
        _kill_group(proc, signal.SIGKILL)
        raise
    if timed_out:
        _kill_group(proc, signal.SIGTERM)
        data = _bounded_communicate(proc, TERM_GRACE, reader)
        if data is None:
            _kill_group(proc, signal.SIGKILL)
            data = _bounded_communicate(proc, KILL_GRACE, reader)
        if data is None:
            # Unkillable (uninterruptible sleep) or a grandchild holds the
            # pipes: stop waiting.  The zombie is the kernel's problem now.
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            data = (b"", b"")
    duration = time.monotonic() - start
    out, err = data if data is not None else (b"", b"")
    res = Result(
        argv,
        None if timed_out else proc.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        duration,
        timed_out=timed_out,
    )
    log.debug("done %s rc=%s in %.2fs", label, res.returncode, duration)
    if check and timed_out:
        raise ToolTimeout(
            f"{label} did not finish within {timeout:g}s and was killed",
            "see the tool's own output above, or retry",
            stderr_tail=res.stderr_tail(),
        )
    if check and res.returncode != 0:
        tail = res.stderr_tail()
        raise ToolFailed(
            f"{label} failed (exit {res.returncode})" + (f": {res.brief()}" if tail else ""),
            returncode=res.returncode,
            stderr_tail=tail,
        )
    return res

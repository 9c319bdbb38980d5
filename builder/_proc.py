"""The one subprocess wrapper.  No other builder module imports ``subprocess``.

Every child runs in its own process group with a hard timeout.  On timeout the
whole group gets SIGTERM, then SIGKILL, and every wait afterwards is bounded:
a child stuck in uninterruptible sleep (a hung ``nvidia-smi``) cannot be reaped
and is abandoned rather than waited for (``subprocess.run(timeout=...)`` would
block forever in that case: on timeout it kills the child and then waits for it
without a bound, https://docs.python.org/3/library/subprocess.html#subprocess.run).

The environment handed to children is scrubbed of settings that would make a
tool act on something other than what builder passes explicitly.
"""

from __future__ import annotations

import os
import select
import selectors
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from builder import cancel
from builder.errors import Dropped, ToolFailed, ToolNotFound, ToolTimeout

if TYPE_CHECKING:
    import threading

_log: Any = None  # a logging.Logger once enable_debug() ran (`-v`)


def enable_debug() -> None:
    """Send the wrapper's debug lines (each child's argv, exit and time) to logging (``-v``).

    Without it nothing would be shown, so logging is not even imported (it and traceback
    cost a warm build ~8 ms before uv starts)."""
    global _log
    import logging

    _log = logging.getLogger("builder.proc")


def _debug(msg: str, *args: object) -> None:
    if _log is not None:
        _log.debug(msg, *args)

#: How long to wait for a group to die after SIGTERM, then after SIGKILL.
TERM_GRACE = 1.0
KILL_GRACE = 1.0
#: How often a waiting thread looks at the process-wide stop flag (builder.cancel).
POLL = 0.1
#: Default cap on what one child may print (stdout + stderr, bytes): generous, so
#: only a runaway tool hits it; host probes pass a much smaller ``max_output``.
MAX_OUTPUT = 256 * 1024 * 1024

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
    output_capped: bool = False  # printed more than max_output: killed, output cut there

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.missing and not self.output_capped

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


class _Overflow(Exception):
    """The child printed more than its cap; carries what was read (cut at the cap)."""

    def __init__(self, out: bytes, err: bytes) -> None:
        super().__init__("output cap exceeded")
        self.out, self.err = out, err


LineCallback = Callable[[str, str], None]
"""Called with ``("stdout" | "stderr", line)`` for every non-empty line a child writes."""


class _Pipes:
    """What :func:`_communicate` has read from one child so far (kept across calls).

    With ``on_line``, each complete line (``\n``, ``\r\n`` or ``\r``) goes to it as
    it arrives, in the reading thread; a callback that raises is switched off
    (progress must never fail the work) and the output is still kept whole.
    """

    def __init__(self, input: bytes | None, on_line: LineCallback | None = None) -> None:
        self.out, self.err = bytearray(), bytearray()
        self.input, self.sent = input, 0
        self.on_line = on_line
        self.pending = {"stdout": b"", "stderr": b""}

    def lines(self, name: str, chunk: bytes) -> None:
        """Hand the complete lines of ``chunk`` to ``on_line`` (an empty chunk: the stream ended)."""
        if self.on_line is None:
            return
        data = (self.pending[name] + chunk).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *done, rest = data.split(b"\n")
        if not chunk:
            done, rest = [*done, rest], b""
        self.pending[name] = rest
        for raw in done:
            text = raw.decode("utf-8", "replace").rstrip()
            if text and self.on_line is not None:
                try:
                    self.on_line(name, text)
                except Exception as exc:  # see the class docstring
                    _debug("line callback failed, switched off: %r", exc)
                    self.on_line = None


def _communicate(proc: subprocess.Popen[bytes], input: bytes | None, timeout: float,
                 *, max_output: int, on_line: LineCallback | None = None) -> tuple[bytes, bytes]:
    """``proc.communicate(input, timeout)`` that stops reading past ``max_output`` bytes.

    Why not ``communicate``: it buffers everything a child prints (100 MB of
    nvidia-smi output took 48 s and 1.4 GB).  Like ``communicate`` it can be
    called again after ``subprocess.TimeoutExpired`` and keeps what it read.
    Raises :class:`_Overflow` once stdout + stderr exceed ``max_output``.
    ``on_line`` (first call only) hears each line as it is read.
    """
    st: _Pipes | None = getattr(proc, "_builder_pipes", None)
    if st is None:
        st = _Pipes(input, on_line)
        proc._builder_pipes = st  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for stream, buf, name in ((proc.stdout, st.out, "stdout"), (proc.stderr, st.err, "stderr")):
            if stream is not None and not stream.closed:
                sel.register(stream, selectors.EVENT_READ, (buf, stream, name))
        if proc.stdin is not None and not proc.stdin.closed:
            if st.input is None or st.sent >= len(st.input):
                proc.stdin.close()
            else:
                sel.register(proc.stdin, selectors.EVENT_WRITE, None)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ev in sel.select(left):
                if key.data is None:  # stdin
                    assert st.input is not None and proc.stdin is not None
                    try:
                        st.sent += os.write(key.fd, st.input[st.sent:st.sent + select.PIPE_BUF])
                    except BrokenPipeError:
                        st.sent = len(st.input)
                    if st.sent >= len(st.input):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                buf, stream, name = key.data
                chunk = os.read(key.fd, 65536)
                st.lines(name, chunk)
                if not chunk:
                    sel.unregister(stream)
                    stream.close()
                    continue
                buf.extend(chunk)
                if len(st.out) + len(st.err) > max_output:
                    keep = max(0, max_output - len(st.err))
                    raise _Overflow(bytes(st.out[:keep]), bytes(st.err[:max_output - min(keep, len(st.out))]))
    proc.wait(max(0.0, deadline - time.monotonic()))  # TimeoutExpired if it keeps running
    return bytes(st.out), bytes(st.err)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole group and reap it within a bound (used when builder stops)."""
    _kill_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass  # unkillable (uninterruptible sleep): abandoned, as on timeout
    _close_pipes(proc)


def _wait(proc: subprocess.Popen[bytes], input: bytes | None, timeout: float,
          *, max_output: int, on_line: LineCallback | None = None,
          stop: threading.Event | None = None) -> tuple[bytes, bytes] | None:
    """:func:`_communicate` in short slices, watching the stop flag (and ``stop``); None on timeout.

    A worker thread never sees a signal itself: polling the flag is how its
    child is stopped when the main thread got SIGINT/SIGTERM/SIGHUP.
    """
    deadline = time.monotonic() + timeout
    while True:
        if cancel.requested():
            _stop(proc)
            cancel.check()
        if stop is not None and stop.is_set():
            _stop(proc)
            raise Dropped(shlex.join(proc.args) if isinstance(proc.args, list | tuple) else str(proc.args))
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return _communicate(proc, input, min(POLL, left), max_output=max_output, on_line=on_line)
        except subprocess.TimeoutExpired:
            continue


def _bounded_communicate(
    proc: subprocess.Popen[bytes], timeout: float, max_output: int = MAX_OUTPUT
) -> tuple[bytes, bytes] | None:
    try:
        return _communicate(proc, None, timeout, max_output=max_output)
    except subprocess.TimeoutExpired:
        return None
    except _Overflow as ov:
        return ov.out, ov.err


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    check: bool = False,
    what: str | None = None,
    max_output: int = MAX_OUTPUT,
    on_line: LineCallback | None = None,
    started: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Run ``argv`` with a hard ``timeout`` (seconds).

    Never raises for a missing tool, a non-zero exit or a timeout unless
    ``check`` is true; then it raises ToolNotFound, ToolFailed or ToolTimeout
    naming ``what`` (default: the program name) with the tail of stderr.
    ``env`` is used as given; callers build it with :func:`clean_env`.
    A child that prints more than ``max_output`` bytes (stdout + stderr) is
    killed with its group; the Result keeps the first ``max_output`` bytes and
    says ``output_capped``.  ``on_line`` (optional) gets each output line as it
    arrives (progress); the Result still holds the whole output.  ``started`` (optional) is set
    once the child runs (a caller starts other work only then: see builder.suggest.resolve);
    setting ``stop`` (optional) kills the child's group within a poll and raises
    :class:`~builder.errors.Dropped`, whatever ``check`` says.
    """
    argv = tuple(str(a) for a in argv)
    cancel.check()  # no new child once builder is stopping
    label = what or os.path.basename(argv[0])
    exe = which(argv[0], path=(env or os.environ).get("PATH"))
    if exe is None:
        res = Result(argv, None, "", f"{argv[0]}: not found", 0.0, missing=True)
        if check:
            raise ToolNotFound(f"{label} not found: {argv[0]}", "install it or put it on PATH")
        return res
    _debug("run %s (timeout %.1fs)", shlex.join(argv), timeout)
    start = time.monotonic()
    try:
        with cancel.deferred():
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
    if started is not None:
        started.set()
    timed_out = capped = False
    data = None
    try:
        cancel.check()  # a signal that arrived while the child was being started
        data = _wait(proc, input.encode() if input is not None else None, timeout, max_output=max_output,
                     on_line=on_line, stop=stop)
        timed_out = data is None
    except _Overflow as ov:
        capped, data = True, (ov.out, ov.err)
        _kill_group(proc, signal.SIGKILL)
        _bounded_communicate(proc, KILL_GRACE, 0)  # drain and reap, bounded; the output is already cut
        _close_pipes(proc)
    except BaseException:
        # A signal (Interrupted in the main thread, the stop flag in a worker)
        # or any error: never leave the child group running behind us.
        _stop(proc)
        raise
    if timed_out:
        _kill_group(proc, signal.SIGTERM)
        data = _bounded_communicate(proc, TERM_GRACE)
        if data is None:
            _kill_group(proc, signal.SIGKILL)
            data = _bounded_communicate(proc, KILL_GRACE)
        if data is None:
            # Unkillable (uninterruptible sleep) or a grandchild holds the
            # pipes: stop waiting.  The zombie is the kernel's problem now.
            _close_pipes(proc)
            data = (b"", b"")
    duration = time.monotonic() - start
    out, err = data if data is not None else (b"", b"")
    res = Result(
        argv,
        None if timed_out or capped else proc.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        duration,
        timed_out=timed_out,
        output_capped=capped,
    )
    _debug("done %s rc=%s in %.2fs", label, res.returncode, duration)
    if check and timed_out:
        raise ToolTimeout(
            f"{label} did not finish within {timeout:g}s and was killed",
            "see the tool's own output above, or retry",
            stderr_tail=res.stderr_tail(),
        )
    if check and capped:
        raise ToolFailed(f"{label} printed more than {max_output} bytes and was killed",
                         "see the tool's own output, or retry", stderr_tail=res.stderr_tail())
    if check and res.returncode != 0:
        tail = res.stderr_tail()
        raise ToolFailed(
            f"{label} failed (exit {res.returncode})" + (f": {res.brief()}" if tail else ""),
            returncode=res.returncode,
            stderr_tail=tail,
        )
    return res


def spawn_detached(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    logfile: str | os.PathLike[str],
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a long-running service: its own session, no terminal.

    stdin is ``/dev/null``; stdout and stderr are appended to ``logfile``.  Unlike
    :func:`run` there is no timeout: the caller owns the process from here on
    (``builder.serve.process`` records it and stops it with bounded waits).
    Ctrl-C in builder's terminal does not reach it (``setsid``).
    Raises ToolNotFound when ``argv[0]`` cannot be executed.
    """
    argv = tuple(str(a) for a in argv)
    exe = which(argv[0], path=env.get("PATH"))
    if exe is None:
        raise ToolNotFound(f"{argv[0]} not found or not executable", "check the runtime's bin directory")
    _debug("spawn %s (detached, log %s)", shlex.join(argv), logfile)
    log_fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        proc = subprocess.Popen(
            (exe, *argv[1:]), stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
            cwd=cwd, env=dict(env), start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        raise ToolNotFound(f"{argv[0]} cannot be run: {exc.strerror or exc}",
                           "check that it exists and is executable") from None
    finally:
        os.close(log_fd)
    return proc

"""The one error hierarchy of builder, and the exit code each error maps to.

Core code raises these; only the CLI turns them into a message line and an exit
code (see ``builder.cli``).  This module imports nothing from builder.

Exit codes: :data:`EXIT_CODES` is the one table.  ``builder --help`` and every command's
help print it through :func:`exit_help`; README.md's "Exit codes" table says the same in
more words (tests/test_docs.py checks that both list exactly these codes).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_TOOL_MISSING = 4
EXIT_TOOL_FAILED = 5
EXIT_PROTECTED = 6
EXIT_BUSY = 7
EXIT_FS_REFUSED = 8
EXIT_INTERNAL = 70
EXIT_HUNG_UP = 129  # 128 + SIGHUP: a stop signal's code is 128 + its number
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of standard output went away (`builder list | head -1`)
EXIT_TERMINATED = 143  # 128 + SIGTERM

#: The one table of exit codes and what each means, in the words of the help.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_FAILED: "check failed (stale lock, incompatible runtime, host or server not ready)",
    EXIT_USAGE: "usage or spec error",
    EXIT_UNAVAILABLE: "data unavailable (network, probe)",
    EXIT_TOOL_MISSING: "tool missing",
    EXIT_TOOL_FAILED: "tool failed",
    EXIT_PROTECTED: "protected env refused",
    EXIT_BUSY: "busy",
    EXIT_FS_REFUSED: "the filesystem refused a write (read-only, full, permission)",
    EXIT_INTERNAL: "internal error (a bug in builder; -v shows the traceback)",
    EXIT_HUNG_UP: "hung up (SIGHUP)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT)",
    EXIT_BROKEN_PIPE: "the reader of standard output went away (a closed pipe: nothing more is written)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}


def exit_help(meanings: Mapping[int, str | None] | None = None) -> str:
    """``Exit codes: 0 ok, 1 ...``: the help text for :data:`EXIT_CODES`.

    Without ``meanings``, every code with the table's words; with it, the codes a command
    names, each with the command's own words (None: the table's).  A code the table does
    not have is a KeyError: no help can promise an undocumented code.
    """
    own = meanings if meanings is not None else dict.fromkeys(EXIT_CODES)
    undocumented = sorted(set(own) - set(EXIT_CODES))
    if undocumented:
        raise KeyError(f"exit codes not in EXIT_CODES: {undocumented}")
    return "Exit codes: " + ", ".join(f"{c} {own[c] or EXIT_CODES[c]}" for c in sorted(own)) + "."

#: errno values that mean "the filesystem refused", not "builder has a bug".
REFUSED_ERRNOS: dict[int, str] = {
    errno.EROFS: "read-only file system",
    errno.EPERM: "operation not permitted (immutable file or directory?)",
    errno.EACCES: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file size limit, ulimit -f)",
}


class BuilderError(Exception):
    """Base of every error builder reports to the user.

    ``message`` says what failed and why; ``hint`` says what to do next.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self, clean: Callable[[str], str] = str) -> str:
        """One line for the terminal: what failed, why, what to do.  ``clean`` is applied to
        each part the error carries (the CLI escapes control characters with it)."""
        return f"{clean(self.message)} ({clean(self.hint)})" if self.hint else clean(self.message)


class UsageError(BuilderError):
    """A bad option or argument combination."""

    exit_code = EXIT_USAGE


class SpecError(BuilderError):
    """A matrix or host spec is invalid; ``problems`` lists every problem found."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = list(problems)
        head = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} problems in spec"
        )
        super().__init__(head, hint)

    def line(self, clean: Callable[[str], str] = str) -> str:
        """The problems one per line (each part cleaned by ``clean``)."""
        if len(self.problems) == 1:
            return super().line(clean)
        body = "\n".join(f"  {clean(p)}" for p in self.problems)
        tail = f"\n{clean(self.hint)}" if self.hint else ""
        return f"{clean(self.message)}:\n{body}{tail}"


class UnknownMatrix(UsageError):
    """The selector names no matrix in envs/."""


class LockFileError(BuilderError):
    """A lock file is unreadable or not a valid PEP 751 / builder lock."""

    exit_code = EXIT_USAGE


class ManifestError(BuilderError):
    """A runtime directory's ``runtime.json`` is missing, unreadable, of another format or
    invalid: the directory is not a finished runtime.  ``problems`` lists every problem found."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, problems: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems


class DataFileError(BuilderError):
    """One of builder's data tables (``builder/data/*.toml``) is unreadable or has a bad row."""

    exit_code = EXIT_USAGE


class StaleLock(BuilderError):
    """A lock does not match its spec (or is missing)."""

    exit_code = EXIT_FAILED


class SdistOnly(BuilderError):
    """The resolution would build a package from source on the host."""

    exit_code = EXIT_FAILED


class Incompatible(BuilderError):
    """A runtime's components are incompatible with each other or the host."""

    exit_code = EXIT_FAILED


class NotReady(BuilderError):
    """The host is not ready (preflight / verify-driver)."""

    exit_code = EXIT_FAILED


class Unavailable(BuilderError):
    """Needed data could not be read: network down, HTTP error, probe failed."""

    exit_code = EXIT_UNAVAILABLE


class ToolNotFound(BuilderError):
    """A required executable is not installed."""

    exit_code = EXIT_TOOL_MISSING


class ToolFailed(BuilderError):
    """A tool ran and exited non-zero (or timed out)."""

    exit_code = EXIT_TOOL_FAILED

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ToolTimeout(ToolFailed):
    """A tool did not finish within its bound and was killed."""


class ProtectedEnvError(BuilderError):
    """The command would write inside a protected environment such as QL_1."""

    exit_code = EXIT_PROTECTED


class Busy(BuilderError):
    """Another builder process holds the lock."""

    exit_code = EXIT_BUSY


class BuildError(BuilderError):
    """A runtime build failed; nothing was switched in."""

    exit_code = EXIT_FAILED


class FilesystemRefused(BuilderError):
    """The filesystem refused a write: read-only, immutable, full, over quota, no permission."""

    exit_code = EXIT_FS_REFUSED

    @classmethod
    def from_oserror(cls, exc: OSError, path: str | os.PathLike[str] | None = None,
                     what: str = "write") -> FilesystemRefused | None:
        """The error for ``exc`` if its errno is one of :data:`REFUSED_ERRNOS`, else None."""
        why = REFUSED_ERRNOS.get(exc.errno or 0)
        if why is None:
            return None
        where = path if path is not None else (exc.filename if exc.filename is not None else "?")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            hint = "free space (or quota) on that filesystem, or choose another path"
        elif exc.errno == errno.EROFS:
            hint = "remount it read-write, or choose another path"
        else:
            hint = "check its permissions and attributes (ls -ld, lsattr), or choose another path"
        return cls(f"cannot {what} {os.fsdecode(where)}: {why} ({errno.errorcode.get(exc.errno or 0, '?')})",
                   hint)


    @classmethod
    def from_tool_output(cls, text: str, path: str | os.PathLike[str], what: str = "write into",
                         *, tool: str = "uv") -> FilesystemRefused | None:
        """The error for a child (uv) that failed because the filesystem refused, else None.

        uv reports OS errors as ``<message> (os error N)``; the message alone
        is matched too.
        """
        code = next((int(m) for m in re.findall(r"\(os error (\d+)\)", text) if int(m) in REFUSED_ERRNOS), None)
        if code is None:
            code = next((c for c, m in _OS_MESSAGES.items() if m in text), None)
        if code is None:
            return None
        refused = cls.from_oserror(OSError(code, os.strerror(code)), path, what)
        if refused is not None:
            said = next((ln.strip() for ln in text.splitlines()
                         if f"os error {code}" in ln or _OS_MESSAGES[code] in ln), "")
            refused.message += f"; {tool}: {said[:240]}" if said else f" ({tool} reported it)"
        return refused


#: How the C library words the refusing errnos (what a child prints).
_OS_MESSAGES = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                errno.EROFS: "Read-only file system", errno.EACCES: "Permission denied",
                errno.EPERM: "Operation not permitted", errno.EFBIG: "File too large"}


class Interrupted(BaseException):  # noqa: N818 - a BaseException like KeyboardInterrupt, not an error
    """A signal (SIGINT, SIGTERM, SIGHUP) asked builder to stop.

    Not a KeyboardInterrupt on purpose: CPython remembers a KeyboardInterrupt
    that ends a string ``exec`` (dataclasses and namedtuple build their methods
    that way) and, under ``python -m``, kills the process with SIGINT at exit
    even when the exception was handled: exit status -2 instead of 130.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Dropped(Exception):  # noqa: N818 - control flow inside builder, never shown: not an error
    """The caller no longer wants what a child was doing (its ``stop`` event was set):
    :func:`builder._proc.run` killed the child's group.  Raised to the thread that ran it, and
    handled there (builder.suggest.resolve's uv started ahead): it never reaches the CLI."""

"""Where a builder project lives, and which matrices it declares (pure-ish I/O).

A project is a directory with ``envs/`` (matrix specs and ``host.toml``) and
``locks/``.  It is found from ``--project``, ``$BUILDER_PROJECT``, the current
directory or its parents, and finally the checkout builder was installed from
(the shipped defaults).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import SpecError, UnknownMatrix, UsageError
from builder.spec import Host, Matrix, load_host, load_matrix

_SELECTOR = re.compile(r"^(?:matrix-)?([A-Za-z0-9][A-Za-z0-9-]*)$")


def _is_project(d: Path) -> bool:
    return (d / "envs").is_dir() and any((d / "envs").glob("matrix-*.toml"))


def find_root(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """Return the project root, or raise UsageError saying how to point at one."""
    if explicit is None:
        explicit = os.environ.get("BUILDER_PROJECT") or None
    if explicit is not None:
        try:
            root = Path(explicit).resolve()
        except FileNotFoundError:  # a relative --project from a deleted directory
            raise UsageError(f"cannot resolve {explicit}: the current directory no longer exists",
                             "cd to an existing directory, or pass an absolute --project DIR") from None
        if not _is_project(root):
            raise UsageError(
                f"{root} is not a builder project: no envs/matrix-*.toml",
                "pass --project DIR pointing at a directory with envs/",
            )
        return root
    try:
        here = (cwd or Path.cwd()).resolve()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists (deleted while in use)",
                         "cd to an existing directory, or pass --project DIR") from None
    for d in (here, *here.parents):
        if _is_project(d):
            return d
    shipped = Path(__file__).resolve().parent.parent
    if _is_project(shipped):
        return shipped
    raise UsageError(
        "no builder project found in this directory or its parents",
        "run from the project checkout or pass --project DIR",
    )


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def envs(self) -> Path:
        return self.root / "envs"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def runtimes(self) -> Path:
        return self.root / "runtimes"

    def matrix_paths(self) -> list[Path]:
        return sorted(self.envs.glob("matrix-*.toml"))

    def matrix_ids(self) -> list[str]:
        return [p.stem[len("matrix-"):] for p in self.matrix_paths()]

    def matrix_path(self, selector: str) -> Path:
        return self.envs / f"matrix-{normalize_selector(selector, self.matrix_ids())}.toml"

    def matrix(self, selector: str) -> Matrix:
        return load_matrix(self.matrix_path(selector))

    def matrices(self, selectors: list[str] | None = None) -> list[Matrix]:
        """Load the selected matrices (all when ``selectors`` is empty).

        Every spec is loaded even when one is bad, so that all problems are
        reported at once.
        """
        paths = (
            [self.matrix_path(s) for s in selectors] if selectors else self.matrix_paths()
        )
        out: list[Matrix] = []
        problems: list[str] = []
        for p in paths:
            try:
                out.append(load_matrix(p))
            except SpecError as exc:
                problems.extend(exc.problems)
        if problems:
            raise SpecError(problems, "fix the spec and run the command again")
        return out

    def host(self) -> Host:
        return load_host(self.envs / "host.toml")


def py_tag(python: str) -> str:
    """``3.12`` -> ``py312``."""
    return "py" + python.replace(".", "")


def lock_path(locks_dir: Path, matrix: Matrix, python: str) -> Path:
    """``locks/matrix-b/pylock.py312.toml``: a valid PEP 751 file name."""
    return locks_dir / matrix.name / f"pylock.{py_tag(python)}.toml"


def regenerate_command(matrix: Matrix, python: str) -> str:
    """The command that rewrites the locks of (matrix, python)."""
    return f"builder lock --matrix {matrix.id} --python {python}"


def normalize_selector(selector: str, known: list[str]) -> str:
    """``A``, ``a`` and ``matrix-a`` all select matrix id ``a``."""
    m = _SELECTOR.match(selector.strip())
    mid = m.group(1).lower() if m else ""
    if mid in known:
        return mid
    from builder.schema import suggest

    names = ", ".join(f"matrix-{k}" for k in known) or "none"
    raise UnknownMatrix(
        f"unknown matrix {selector!r}{suggest(mid, known)}",
        f"known matrices: {names}",
    )


def select_pythons(matrix: Matrix, python: str | None) -> list[str]:
    """All of the matrix's Pythons, or the one asked for (which it must declare)."""
    if python is None:
        return list(matrix.pythons)
    want = python.removeprefix("py").removeprefix("python")
    if want not in matrix.pythons:
        raise UsageError(
            f"{matrix.name} does not declare Python {python}",
            f"it declares {', '.join(matrix.pythons)}",
        )
    return [want]

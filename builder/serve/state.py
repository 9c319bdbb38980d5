"""The serve state directory, its one lock, and the protected-env gate for serve writes.

Layout (``state-dir`` of the service spec, relative = under the project)::

    serve-state/
      .builder.lock           flock held by every mutating serve/route command
      slots/<slot>.json       the running server of a slot: pid, start time, exe, runtime ...
      logs/<slot>-<time>.log  stdout + stderr of one server start
      route-files             route files builder has written (one path a line): for pinning

Every path builder writes for serving (state dir, logs, route file, its
journal) passes :meth:`Context.guard` first; that is the only place the
protected-env check is made for serving, so a shared write gate can replace it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder import paths, protect
from builder.errors import BuilderError, UsageError
from builder.files import inputs
from builder.files.fsio import atomic_write, directory_lock
from builder.project import Project
from builder.serve import process, record, route
from builder.serve.record import SlotRecord
from builder.serve.spec import Service, load_service

DEFAULT_SPEC = "service.toml"  # under envs/


def spec_path(project: Project, explicit: str | None = None) -> Path:
    return Path(explicit) if explicit else project.envs / DEFAULT_SPEC


def _under(project: Project, p: str) -> Path:
    path = Path(os.path.expanduser(p))
    return path if path.is_absolute() else project.root / path


@dataclass(frozen=True)
class Context:
    """A loaded service with its resolved paths."""

    project: Project
    service: Service
    state_dir: Path
    route_file: Path
    #: The route file's path came from the user (``--route-file``, or an absolute
    #: ``route-file`` in the spec): its directory must exist. A relative spec
    #: ``route-file`` lies under the project, builder's own output (``deploy/``),
    #: whose directory is created as needed.
    route_given: bool = False

    @property
    def journal(self) -> Path:
        return self.route_file.with_name(self.route_file.name + ".journal")

    @property
    def slots_dir(self) -> Path:
        return self.state_dir / "slots"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def record_path(self, slot: str) -> Path:
        return self.slots_dir / f"{slot}.json"

    def guard(self, *, route: bool = True) -> None:
        """Refuse (exit 6) before anything is written when a serve path lies in a protected env.

        Every path serve writes passes the write gate (:mod:`builder.paths`):
        the state directory and its slots/ and logs/ (either may be a symlink),
        the route file and its journal. A user-given route file whose
        directory is missing is refused (exit 2), never created.
        """
        for d, what in ((self.state_dir, "keep serve state in"), (self.slots_dir, "keep slot records in"),
                        (self.logs_dir, "keep server logs in")):
            paths.gate(d, what=what, project=self.project, kind="dir")
        if route:
            for f, what in ((self.route_file, "write the route file"), (self.journal, "write the route journal")):
                paths.gate(f, what=what, project=self.project, user_given=self.route_given)

    def guard_exec(self, path: Path) -> None:
        """Never serve from a protected env (QL_1's own vllm)."""
        hit = protect.for_project(self.project).match(path)
        if hit is not None:
            from builder.errors import ProtectedEnvError

            raise ProtectedEnvError(f"refusing to serve {path}: it is inside the protected {hit.why}",
                                    "serve a runtime builder built (builder build), never a protected env")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The one lock serve and route commands serialise on (exit 7 after ``lock-wait``)."""
        with directory_lock(self.state_dir, timeout=self.service.lock_wait):
            yield

    # ------------------------------------------------------------------ slot records

    @property
    def home(self) -> process.Home:
        """This state directory's identity, which its records and its servers carry."""
        return process.home_of(self.state_dir)

    def read_record(self, slot: str) -> SlotRecord | None:
        return record.read(self.record_path(slot))

    def write_record(self, rec: SlotRecord) -> None:
        record.write(self.record_path(rec.slot), rec)

    def drop_record(self, slot: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path(slot).unlink()

    # ------------------------------------------------------------------ route files seen

    def remember_route_file(self, path: Path) -> None:
        known = self.route_files()
        if path not in known:
            atomic_write(self.state_dir / "route-files", "".join(f"{p}\n" for p in [*known, path]))

    def route_files(self) -> list[Path]:
        try:
            lines = (self.state_dir / "route-files").read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [Path(x) for x in lines if x.strip()]


def write_file(project: Project, path: str, text: str, *, what: str) -> None:
    """Write an output file (a rendered unit) atomically, through the write gate."""
    atomic_write(paths.gate(path, what=what, project=project, kind="file", user_given=True), text)


def context(project: Project, spec: str | None = None, route_file: str | None = None) -> Context:
    """Load the service spec and resolve its paths (``--route-file`` overrides the spec's)."""
    svc = load_service(spec_path(project, spec))
    state = Path(os.path.realpath(_under(project, svc.state_dir)))
    chosen = route_file or svc.route_file
    rfile = Path(os.path.abspath(_under(project, chosen)))
    if rfile.is_dir():
        raise BuilderError(f"route file {rfile} is a directory", "point route-file at a file")
    given = route_file is not None or Path(os.path.expanduser(chosen)).is_absolute()
    return Context(project, svc, state, rfile, route_given=given)


def api_key(svc: Service, *, required: bool) -> str | None:
    """The API key named by ``api-key-env``: from the environment, else from ``api-key-file``."""
    if not svc.api_key_env:
        return None
    value = os.environ.get(svc.api_key_env)
    if value:
        return value
    if svc.api_key_file:
        try:
            text = inputs.read_text(svc.api_key_file)
        except OSError as exc:
            if required:
                raise UsageError(f"the API key: ${svc.api_key_env} is not set and {svc.api_key_file} cannot be "
                                 f"read ({exc.strerror or exc})", f"export {svc.api_key_env} or fix the file") from None
            return None
        got = route.parse(text).vars.get(svc.api_key_env)
        if got:
            return got
    if required:
        raise UsageError(f"the service needs an API key but ${svc.api_key_env} is not set"
                         + (f" and {svc.api_key_file} does not define it" if svc.api_key_file else ""),
                         f"export {svc.api_key_env}=... (never write the key into the spec)")
    return None

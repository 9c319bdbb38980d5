"""conda-lock files on disk, through conda-lock's own models (no solving here).

builder writes a conda-lock v1 file (what ``conda-lock install`` and
``micromamba`` read) with builder's stamp in ``metadata.custom_metadata``.
``builder-body-hash`` is the sha256 of the canonical JSON of the whole file
without that one key, so any edit of a package, hash or URL is detected.

Importing conda-lock costs about a second (pydantic): ``read_stamp`` only
parses YAML, so ``builder lock --check`` stays fast; writing and installing go
through ``conda_lock.lockfile`` models.

PyYAML, conda-lock and py-rattler come with builder's ``conda`` extra: without
it, a matrix with a ``[conda]`` base is refused with :class:`ToolNotFound`
(:func:`require_extra`), and builder without conda bases needs none of them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder import paths
from builder.errors import LockFileError, ToolNotFound
from builder.project import regenerate_command
from builder.pylock import sha256_text
from builder.spec import Matrix

if TYPE_CHECKING:
    from conda_lock.lockfile.v2prelim.models import Lockfile

SUBDIR = "linux-64"
BODY_HASH_KEY = "builder-body-hash"
#: The conda extra: (module, distribution).
EXTRA = (("yaml", "PyYAML"), ("conda_lock", "conda-lock"), ("rattler", "py-rattler"))


def require_extra(what: str = "a matrix with a [conda] base") -> None:
    """ToolNotFound unless builder's conda extra is installed (PyYAML, conda-lock, py-rattler)."""
    missing = [dist for mod, dist in EXTRA if importlib.util.find_spec(mod) is None]
    if missing:
        raise ToolNotFound(f"{what} needs builder's conda extra: {', '.join(missing)} not installed",
                           "pip install 'builder[conda]'")


def _yaml() -> Any:
    require_extra()
    import yaml

    return yaml


def write_inputs(d: Path, chans: list[tuple[str, str]], wanted: list[str],
                 *, vps: Mapping[str, str]) -> tuple[Path, Path]:
    """conda-lock's inputs: an environment.yml and a virtual-package spec."""
    yaml = _yaml()
    env_yml = d / "environment.yml"
    vp_yml = d / "virtual-packages.yml"
    env_yml.write_text(yaml.safe_dump({
        "channels": [url for _, url in chans] + ["nodefaults"],
        "dependencies": list(wanted),
        "platforms": [SUBDIR],
    }, sort_keys=False))
    vp_yml.write_text(yaml.safe_dump({"subdirs": {SUBDIR: {"packages": dict(vps)}}}, sort_keys=False))
    return env_yml, vp_yml


def content_hash(chans: list[tuple[str, str]], wanted: list[str], vps: Mapping[str, str]) -> dict[str, str]:
    """conda-lock's own input hash for these inputs (what ``conda-lock lock`` would record)."""
    from conda_lock.content_hash import compute_content_hashes
    from conda_lock.lookup import DEFAULT_MAPPING_URL
    from conda_lock.src_parser import make_lock_spec
    from conda_lock.virtual_package import virtual_package_repo_from_specification

    with paths.temp_dir("builder-conda-hash-") as tmp:
        env_yml, vp_yml = write_inputs(tmp, chans, wanted, vps=vps)
        spec = make_lock_spec(src_files=[env_yml], platform_overrides=[SUBDIR],
                              mapping_url=DEFAULT_MAPPING_URL)
        vpr = virtual_package_repo_from_specification(vp_yml)
        return dict(compute_content_hashes(spec, vpr))


def from_records(records: list[Any], chans: list[tuple[str, str]]) -> Lockfile:
    """A conda-lock Lockfile from rattler's solved ``RepoDataRecord`` list.

    Dependencies are converted exactly as conda-lock's own solver does
    (conda_lock/conda_solver.py: one merged MatchSpec per name, its version
    spec string), so both solvers' files read alike.
    """
    from conda_lock.interfaces.vendored_conda import MatchSpec
    from conda_lock.lockfile.v2prelim.models import HashModel, LockedDependency, Lockfile, LockMeta

    pkgs = []
    for r in records:
        by_name: dict[str, list[Any]] = {}
        for dep in r.depends:
            ms = MatchSpec(dep)
            by_name.setdefault(ms.name, []).append(ms)
        deps = {}
        for name, mss in by_name.items():
            merged = mss[0] if len(mss) == 1 else MatchSpec.merge(mss)[0]
            deps[name] = merged.version.spec_str if merged.version is not None else ""
        pkgs.append(LockedDependency(
            name=r.name.normalized, version=str(r.version), manager="conda", platform=SUBDIR,
            dependencies=deps, url=r.url,
            hash=HashModel(md5=r.md5.hex() if r.md5 else None, sha256=r.sha256.hex() if r.sha256 else None),
            categories={"main"}, build=str(r.build),
        ))
    meta = LockMeta(content_hash={}, channels=[url for _, url in chans], platforms=[SUBDIR], sources=[])
    return Lockfile(package=pkgs, metadata=meta)


def _body_hash(data: Mapping[str, Any]) -> str:
    d = copy.deepcopy(dict(data))
    custom = (d.get("metadata") or {}).get("custom_metadata") or {}
    custom.pop(BODY_HASH_KEY, None)
    return sha256_text(json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def header(matrix: Matrix, python: str, name: str) -> str:
    return (
        f"# conda lock of the interpreter base of {matrix.name} for Python {python} ({SUBDIR}).\n"
        f"# Generated by builder from envs/{matrix.name}.toml: do not edit; regenerate with\n"
        f"#   {regenerate_command(matrix, python)}\n"
        f"# Install: builder build --matrix {matrix.id} --python {python} --base conda\n"
        f"#   or: conda-lock install -p PREFIX {name}\n"
    )


def render(lf: Lockfile, matrix: Matrix, python: str, *, stamp: Mapping[str, str],
           content_hash: Mapping[str, str]) -> str:
    """The final lock text: conda-lock's own writer, builder's stamp and header."""
    from conda_lock.lockfile import write_conda_lock_file

    missing = [p.name for p in lf.package if p.manager == "conda" and not p.name.startswith("__")
               and not (p.hash.sha256 and p.hash.md5)]
    if missing:
        raise LockFileError(f"the channel gives no sha256/md5 for {', '.join(sorted(missing)[:5])}",
                            "builder requires both hashes for every conda package; use another channel build")
    lf.metadata.content_hash = dict(content_hash)
    lf.metadata.platforms = [SUBDIR]
    lf.metadata.sources = [f"../../envs/{matrix.name}.toml"]
    lf.metadata.time_metadata = None  # keep re-locks byte-identical when nothing changed
    lf.alphasort_inplace()
    lf.filter_virtual_packages_inplace()
    lf.metadata.custom_metadata = dict(stamp)
    lf.metadata.custom_metadata[BODY_HASH_KEY] = _body_hash(lf.to_v1().dict_for_output())
    with paths.temp_dir("builder-conda-write-") as tmp:
        out = tmp / "conda-lock.yml"
        write_conda_lock_file(lf, out, metadata_choices=None, include_help_text=False)
        body = out.read_text(encoding="utf-8")
    name = f"conda-lock.py{python.replace('.', '')}.yml"
    return header(matrix, python, name) + body


def _load(text: str, where: str) -> dict[str, Any]:
    yaml = _yaml()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise LockFileError(f"{where}: not valid YAML: {exc}", "regenerate it with `builder lock`") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("metadata"), dict):
        raise LockFileError(f"{where}: not a conda-lock v1 file", "regenerate it with `builder lock`")
    return data


def read_stamp(text: str, where: str) -> tuple[dict[str, str], bool]:
    """builder's ``custom_metadata`` and whether the rest of the file is unmodified."""
    data = _load(text, where)
    custom = data["metadata"].get("custom_metadata")
    if not isinstance(custom, dict) or BODY_HASH_KEY not in custom:
        raise LockFileError(f"{where}: no builder metadata: not written by builder",
                            "regenerate it with `builder lock`")
    return {str(k): str(v) for k, v in custom.items()}, _body_hash(data) == custom[BODY_HASH_KEY]


def read(path: Path) -> Lockfile:
    """Parse a conda-lock file with conda-lock's own reader; errors become LockFileError."""
    yaml = _yaml()
    from conda_lock.lockfile import parse_conda_lock_file

    try:
        return parse_conda_lock_file(path)
    except FileNotFoundError:
        raise LockFileError(f"{path}: no conda lock", "run `builder lock` for this matrix") from None
    except (ValueError, yaml.YAMLError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LockFileError(f"{path}: not a valid conda-lock file: {first}",
                            "regenerate it with `builder lock`") from None

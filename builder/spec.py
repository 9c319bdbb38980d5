"""Matrix and host specs: load TOML, validate into frozen dataclasses (pure core).

``load_matrix(path)`` reads a file; ``matrix_from_mapping`` validates a plain
mapping, collecting every problem (file, dotted path, "did you mean") before
raising one :class:`SpecError`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import SpecError
from builder.files import inputs, tomlread
from builder.schema import Field, Problems, validate

PYPI_SIMPLE = "https://pypi.org/simple"
PYTORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
VLLM_INDEX = "https://wheels.vllm.ai/{version}/{variant}"
SOURCES = ("pypi", "pytorch-index", "vllm-index", "url")

#: Bumped when the meaning of a spec for locking changes; part of the spec hash.
LOCK_FORMAT = 1

_PY_RE = re.compile(r"^3\.\d{1,2}$")
_CUDA_RE = re.compile(r"^\d{2}\.\d{1,2}$")
_PLATFORM_RE = re.compile(
    r"^(x86_64|aarch64)-(manylinux_2_\d+|unknown-linux-gnu)$|^(linux|windows|macos)$"
)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# The plain forms every shipped spec uses, accepted without importing packaging:
# packaging's requirement parser compiles ~70 regexes on import, about a fifth of
# `builder lock --check`'s 0.1 s budget.  Each pattern accepts only a strict subset
# of what packaging accepts (tests/test_spec.py checks generated strings against
# packaging); anything else is judged by packaging itself, with its messages.
_PLAIN_VERSION = r"[0-9]+(?:\.[0-9]+)*"
_PLAIN_VERSION_RE = re.compile(rf"{_PLAIN_VERSION}")
_PLAIN_CLAUSE = (rf" *(?:(?:==|!=|<=|>=|<|>) *{_PLAIN_VERSION}|~= *[0-9]+(?:\.[0-9]+)+"
                 rf"|(?:==|!=) *{_PLAIN_VERSION}\.\*) *")
_PLAIN_REQUIREMENT_RE = re.compile(
    rf"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:{_PLAIN_CLAUSE}(?:,{_PLAIN_CLAUSE})*)?")


def _version(v: Any) -> str | None:
    if _PLAIN_VERSION_RE.fullmatch(str(v)):
        return None
    from packaging.version import InvalidVersion, Version

    try:
        Version(str(v))
    except InvalidVersion:
        return f"not a valid version: {v!r}"
    return None


def _requirement(v: Any) -> str | None:
    if _PLAIN_REQUIREMENT_RE.fullmatch(str(v)):
        return None
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(str(v))
    except InvalidRequirement as exc:
        return f"not a valid requirement: {v!r} ({exc})"
    return None


def _regex(rx: re.Pattern[str], what: str) -> Any:
    def check(v: Any) -> str | None:
        return None if rx.match(str(v)) else f"{what}, got {v!r}"

    return check


def _date(v: Any) -> str | None:
    if isinstance(v, (_dt.date, _dt.datetime)):
        return None
    try:
        _dt.date.fromisoformat(str(v))
    except ValueError:
        return f"must be a date like 2025-12-30, got {v!r}"
    return None


def _source(v: Any) -> str | None:
    return None if v in SOURCES else f"must be one of {', '.join(SOURCES)}, got {v!r}"


_COMPONENT = {
    "version": Field(str, required=True, check=_version),
    "cuda": Field(str, required=True, check=_regex(_CUDA_RE, "must be a CUDA release like '12.8'")),
    "source": Field(str, check=_source),
    "index": Field(str),
    "url": Field(str),
    "sha256": Field(str, check=_regex(_SHA_RE, "must be 64 lowercase hex digits")),
}

_CONDA = {
    "channels": Field(list, item=str),
    "packages": Field(list, item=str),
    "virtual-packages": Field(dict),
    "channel-overrides": Field(dict),
    "python": Field(dict),  # per matrix Python, a conda version pin: { "3.12" = "3.12.8" }
}

MATRIX_SCHEMA: dict[str, Field] = {
    "id": Field(str, required=True, check=_regex(_ID_RE, "must be lowercase letters, digits, '-'")),
    "title": Field(str, required=True),
    "description": Field(str),
    "driver-floor": Field(str, required=True, check=_version),
    "cuda-track": Field(str, required=True, check=_regex(_CUDA_RE, "must be a CUDA release like '12.8'")),
    "pythons": Field(list, required=True, item=str, check=_regex(_PY_RE, "must be like '3.12'")),
    "platform": Field(
        str, required=True, check=_regex(_PLATFORM_RE, "must be a uv target like 'x86_64-manylinux_2_35'")
    ),
    "exclude-newer": Field((str, _dt.date, _dt.datetime), required=True, check=_date),
    "torch": Field(dict, required=True, table=_COMPONENT),
    "vllm": Field(dict, required=True, table=_COMPONENT),
    "packages": Field(dict, table={
        "extra": Field(list, item=str, check=_requirement),
        "overrides": Field(list, item=str, check=_requirement),
        "constraints": Field(list, item=str, check=_requirement),
    }),
    "index": Field(dict, table={
        "url": Field(str),
        "extra-urls": Field(list, item=str),
        "find-links": Field(list, item=str),
    }),
    "conda": Field(dict, table=_CONDA),
}

HOST_SCHEMA: dict[str, Field] = {
    "name": Field(str),
    "os": Field(str, required=True),
    "glibc": Field(str, required=True, check=_version),
    "kernel": Field(str),
    "driver": Field(str, required=True, check=_version),
    "cuda": Field(str),
    "gpus": Field(list, required=True, array_of_tables=True, table={
        "name": Field(str, required=True),
        "compute-capability": Field(str, required=True, check=_regex(re.compile(r"^\d+\.\d+$"), "must be like '8.9'")),
        "memory-mib": Field(int),
        "count": Field(int),
    }),
    "protected": Field(dict, table={
        "conda-envs": Field(list, item=str),
        "paths": Field(list, item=str),
    }),
}


@dataclass(frozen=True, kw_only=True)
class Component:
    """torch or vLLM: version, CUDA variant and where the wheel comes from."""

    name: str
    version: str
    cuda: str
    source: str = "pypi"
    index: str | None = None
    url: str | None = None
    sha256: str | None = None

    @property
    def variant(self) -> str:
        """``cu128`` for CUDA 12.8."""
        return "cu" + self.cuda.replace(".", "")

    def requirement(self) -> str:
        """The requirement line handed to uv for this component."""
        if self.source == "url":
            return f"{self.name} @ {self.url}#sha256={self.sha256}"
        if self.source in ("pytorch-index", "vllm-index"):
            return f"{self.name}=={self.version}+{self.variant}"
        return f"{self.name}=={self.version}"

    def index_url(self) -> str | None:
        if self.index:
            return self.index
        if self.source == "pytorch-index":
            return PYTORCH_INDEX.format(variant=self.variant)
        if self.source == "vllm-index":
            return VLLM_INDEX.format(version=self.version, variant=self.variant)
        return None


@dataclass(frozen=True, kw_only=True)
class CondaBase:
    channels: tuple[str, ...] = ("conda-forge",)
    packages: tuple[str, ...] = ()
    virtual_packages: Mapping[str, str] = field(default_factory=dict)
    channel_overrides: Mapping[str, str] = field(default_factory=dict)
    python: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """One runtime matrix, as declared in ``envs/matrix-<id>.toml``."""

    id: str
    title: str
    description: str = ""
    driver_floor: str
    cuda_track: str
    pythons: tuple[str, ...]
    platform: str
    exclude_newer: str
    torch: Component
    vllm: Component
    extra: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    index_url: str = PYPI_SIMPLE
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    conda: CondaBase | None = None
    path: str = ""

    @property
    def name(self) -> str:
        return f"matrix-{self.id}"

    def requirements(self) -> list[str]:
        return [self.torch.requirement(), self.vllm.requirement(), *self.extra]

    def index_urls(self) -> list[str]:
        """Extra index URLs, in order: the spec's, then the components'."""
        urls = list(self.extra_index_urls)
        for comp in (self.torch, self.vllm):
            u = comp.index_url()
            if u and u not in urls:
                urls.append(u)
        return urls

    def lock_inputs(self, python: str) -> dict[str, Any]:
        """Everything that determines a lock's content for ``python``."""
        data = asdict(self)
        for k in ("title", "description", "path", "pythons"):
            data.pop(k)
        data["python"] = python
        data["lock-format"] = LOCK_FORMAT
        return data

    def spec_hash(self, python: str) -> str:
        blob = json.dumps(self.lock_inputs(python), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Gpu:
    name: str
    compute_capability: str
    memory_mib: int | None = None
    count: int = 1


@dataclass(frozen=True, kw_only=True)
class Host:
    """The operator's host, as declared in ``envs/host.toml``."""

    name: str = ""
    os: str
    glibc: str
    kernel: str = ""
    driver: str
    cuda: str = ""
    gpus: tuple[Gpu, ...]
    protected_conda_envs: tuple[str, ...] = ()
    protected_paths: tuple[str, ...] = ()

    @property
    def compute_capabilities(self) -> tuple[str, ...]:
        return tuple(sorted({g.compute_capability for g in self.gpus}))

    @property
    def gpu_count(self) -> int:
        return sum(g.count for g in self.gpus)


def _component(name: str, d: Mapping[str, Any], problems: Problems, *, prefix: str) -> Component:
    source = d.get("source", "pypi")
    if source == "url":
        for k in ("url", "sha256"):
            if not d.get(k):
                problems.add(f"{prefix}.{k}", "required when source = 'url'")
    elif d.get("url") or d.get("sha256"):
        problems.add(f"{prefix}.url", "only allowed with source = 'url'")
    return Component(
        name=name,
        version=str(d.get("version", "")),
        cuda=str(d.get("cuda", "")),
        source=str(source),
        index=d.get("index"),
        url=d.get("url"),
        sha256=d.get("sha256"),
    )


def matrix_from_mapping(data: Mapping[str, Any], source: str = "<spec>", expect_id: str | None = None) -> Matrix:
    """Validate a parsed matrix spec; raise SpecError listing every problem."""
    problems = Problems(source)
    validate(data, MATRIX_SCHEMA, problems)
    if expect_id is not None and isinstance(data.get("id"), str) and data["id"] != expect_id:
        problems.add("id", f"must be {expect_id!r} to match the file name, got {data['id']!r}")
    pythons = data.get("pythons")
    if isinstance(pythons, list):
        if not pythons:
            problems.add("pythons", "must name at least one Python")
        if len(set(map(str, pythons))) != len(pythons):
            problems.add("pythons", "lists a Python twice")
    torch = vllm = None
    if isinstance(data.get("torch"), dict):
        torch = _component("torch", data["torch"], problems, prefix="torch")
    if isinstance(data.get("vllm"), dict):
        vllm = _component("vllm", data["vllm"], problems, prefix="vllm")
    if problems.items or torch is None or vllm is None:
        raise SpecError(problems.items or [f"{source}: invalid spec"],
                        "fix the spec and run the command again")
    pk = data.get("packages", {})
    ix = data.get("index", {})
    conda = None
    if "conda" in data:
        c = data["conda"]
        conda = CondaBase(
            channels=tuple(c.get("channels", ["conda-forge"])),
            packages=tuple(c.get("packages", [])),
            virtual_packages={str(k): str(v) for k, v in c.get("virtual-packages", {}).items()},
            channel_overrides={str(k): str(v) for k, v in c.get("channel-overrides", {}).items()},
            python={str(k): str(v) for k, v in c.get("python", {}).items()},
        )
    en = data["exclude-newer"]
    return Matrix(
        id=data["id"],
        title=data["title"],
        description=data.get("description", ""),
        driver_floor=data["driver-floor"],
        cuda_track=data["cuda-track"],
        pythons=tuple(data["pythons"]),
        platform=data["platform"],
        exclude_newer=en.isoformat() if hasattr(en, "isoformat") else str(en),
        torch=torch,
        vllm=vllm,
        extra=tuple(pk.get("extra", [])),
        overrides=tuple(pk.get("overrides", [])),
        constraints=tuple(pk.get("constraints", [])),
        index_url=ix.get("url", PYPI_SIMPLE),
        extra_index_urls=tuple(ix.get("extra-urls", [])),
        find_links=tuple(ix.get("find-links", [])),
        conda=conda,
        path=source,
    )


def host_from_mapping(data: Mapping[str, Any], source: str = "<host>") -> Host:
    """Validate a parsed host spec; raise SpecError listing every problem."""
    problems = Problems(source)
    validate(data, HOST_SCHEMA, problems)
    if problems.items:
        raise SpecError(problems.items, "fix the host spec and run the command again")
    prot = data.get("protected", {})
    return Host(
        name=data.get("name", ""),
        os=data["os"],
        glibc=data["glibc"],
        kernel=data.get("kernel", ""),
        driver=data["driver"],
        cuda=data.get("cuda", ""),
        gpus=tuple(
            Gpu(
                name=g["name"],
                compute_capability=g["compute-capability"],
                memory_mib=g.get("memory-mib"),
                count=g.get("count", 1),
            )
            for g in data["gpus"]
        ),
        protected_conda_envs=tuple(prot.get("conda-envs", [])),
        protected_paths=tuple(prot.get("paths", [])),
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a SpecError naming the file."""
    try:
        data = inputs.read_bytes(path)
    except FileNotFoundError:
        raise SpecError([f"{path}: file not found"], "check the path") from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror or exc}"], "check the path and its permissions") from None
    return parse_toml(data, str(path))


def parse_toml(data: bytes, where: str) -> dict[str, Any]:
    """Parse TOML bytes; every way they can be wrong is a SpecError naming ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"],
                        "save the spec as UTF-8") from None
    try:
        return tomlread.loads(text)
    except tomlread.TOMLDecodeError as exc:
        raise SpecError([f"{where}: not valid TOML: {exc}"], "fix the TOML syntax") from None
    except RecursionError:
        raise SpecError([f"{where}: TOML nested too deeply"], "a spec needs only a few levels of tables") from None


def load_matrix(path: Path) -> Matrix:
    stem = path.stem
    expect = stem[len("matrix-"):] if stem.startswith("matrix-") else None
    return matrix_from_mapping(read_toml(path), str(path), expect_id=expect)


def load_host(path: Path) -> Host:
    return host_from_mapping(read_toml(path), str(path))

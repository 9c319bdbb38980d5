"""Re-resolve the real-lock corpus with the real uv (network; run by hand, not by tests).

    .venv/bin/python tests/data/locks/relock.py [NAME ...]

Each lock is resolved the way builder/uv_backend.py resolves a matrix (``uv pip
compile --format pylock.toml --no-build --no-config`` against PyPI for one Python
and platform) and written as uv wrote it, below a comment header naming the exact
command and the date.  Locks without ``exclude_newer`` resolve against today's
PyPI: re-running them changes them (that is their point), so re-derive their rows
in expected.toml and re-capture (capture.py) after any re-lock.
"""

from __future__ import annotations

import datetime
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPI = "https://pypi.org/simple"

# name -> (requirements, overrides, python platform, exclude-newer or None)
# Every lock but glibc228 is resolved with --no-build, as builder does; glibc228 shows
# what uv does without it when the platform excludes vLLM's wheels (they are tagged
# manylinux_2_31, https://pypi.org/project/vllm/0.13.0/#files: it locks vLLM's sdist,
# which the installer would compile on the host).
NO_BUILD_EXEMPT = {"vllm013-glibc228"}
LOCKS: dict[str, tuple[list[str], list[str], str, str | None]] = {
    "vllm0101": (["vllm==0.10.1.1"], [], "x86_64-manylinux_2_35", "2025-08-25T00:00:00Z"),
    "vllm011": (["vllm==0.11.0"], [], "x86_64-manylinux_2_35", "2025-10-10T00:00:00Z"),
    "vllm012": (["vllm==0.12.0"], [], "x86_64-manylinux_2_35", "2025-12-10T00:00:00Z"),
    "vllm013": (["torch==2.9.0", "vllm==0.13.0"], [], "x86_64-manylinux_2_35", "2025-12-30"),
    "vllm013-matrixa": (["torch==2.9.0", "vllm==0.13.0"], ["nvidia-cublas-cu12>=12.9,<12.10"],
                        "x86_64-manylinux_2_35", "2025-12-30"),
    "vllm013-today": (["torch==2.9.0", "vllm==0.13.0"], [], "x86_64-manylinux_2_35", None),
    "vllm013-glibc228": (["torch==2.9.0", "vllm==0.13.0"], [], "x86_64-manylinux_2_28", "2025-12-30"),
    "vllm020-cu13": (["vllm==0.20.0"], [], "x86_64-manylinux_2_35", "2026-05-01T00:00:00Z"),
    "latest-today": (["vllm"], [], "x86_64-manylinux_2_35", None),
}


def uv() -> str:
    exe = Path(sys.executable).with_name("uv")
    return str(exe) if exe.exists() else shutil.which("uv") or "uv"


def relock(name: str) -> Path:
    reqs, overrides, platform, newer = LOCKS[name]
    with tempfile.TemporaryDirectory(prefix="corpus-lock-") as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text("\n".join(reqs) + "\n")
        argv = [uv(), "pip", "compile", "requirements.in", "--format", "pylock.toml",
                "--output-file", "pylock.toml", "--no-header", "--no-config", "--quiet",
                "--no-python-downloads", "--python-version", "3.12", "--python-platform", platform]
        if newer:
            argv += ["--exclude-newer", newer]
        if name not in NO_BUILD_EXEMPT:
            argv.append("--no-build")
        argv += ["--index-url", PYPI]
        if overrides:
            (work / "overrides.txt").write_text("\n".join(overrides) + "\n")
            argv += ["--overrides", "overrides.txt"]
        version = subprocess.run([argv[0], "--version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        subprocess.run(argv, cwd=work, check=True)
        body = (work / "pylock.toml").read_text(encoding="utf-8")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    shown = shlex.join(["uv", *argv[1:]])
    header = [f"# Real-lock corpus ({name}), resolved {now} by {version} against PyPI:",
              f"#   requirements.in: {' '.join(reqs)}"]
    if overrides:
        header.append(f"#   overrides.txt: {' '.join(overrides)}")
    header += [f"#   {shown}",
               "# Body exactly as uv wrote it. Regenerate: tests/data/locks/relock.py " + name, ""]
    out = HERE / f"pylock.{name}.toml"
    out.write_text("\n".join(header) + body, encoding="utf-8")
    return out


def main(names: list[str]) -> None:
    for name in names or list(LOCKS):
        print(relock(name))


if __name__ == "__main__":
    main(sys.argv[1:])

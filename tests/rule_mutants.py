"""Prove the pure rule tests bite: mutate one comparison of the rules at a time and run
tests/test_check_rules.py against the mutant; every mutant must be killed (a red test).

    .venv/bin/python tests/rule_mutants.py          # all mutants, a line each, exit 1 if one survives
    .venv/bin/python tests/rule_mutants.py -k 3     # only mutant 3

Each mutant is an exact text replacement in a copy of builder/ under a temporary
directory (the working tree is never touched); the copy is put first on PYTHONPATH and
the run checks that the mutant is what it imports.  Run by tests/test_rule_mutants.py
(marked slow).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (file under builder/check/, old text (must occur exactly once), new text, what it breaks)
MUTANTS: list[tuple[str, str, str, str]] = [
    ("rules.py", "    elif DriverVersion.parse(host) >= DriverVersion.parse(native):\n",
     "    elif DriverVersion.parse(host) > DriverVersion.parse(native):\n", "driver-native: >= native -> >"),
    ("rules.py", "    if native is not None and DriverVersion.parse(host) >= DriverVersion.parse(native):\n",
     "    if native is not None and DriverVersion.parse(host) > DriverVersion.parse(native):\n",
     "driver-compat: >= native -> >"),
    ("rules.py", "    if native is not None and DriverVersion.parse(host) >= DriverVersion.parse(native):\n",
     "    if native is not None and True:\n", "driver-compat: native floor comparison -> True"),
    ("rules.py", "    if cmin and DriverVersion.parse(host) >= DriverVersion.parse(cmin):\n",
     "    if cmin and DriverVersion.parse(host) > DriverVersion.parse(cmin):\n", "driver-compat: >= compat -> >"),
    ("rules.py", "    if cmin and DriverVersion.parse(host) >= DriverVersion.parse(cmin):\n",
     "    if False:\n", "driver-compat: compat floor comparison -> False"),
    ("rules.py", "    if declared and DriverVersion.parse(declared) < DriverVersion.parse(native):\n",
     "    if declared and DriverVersion.parse(declared) <= DriverVersion.parse(native):\n",
     "driver-native: declared < native -> <="),
    ("rules.py", "    elif declared and DriverVersion.parse(host) < DriverVersion.parse(declared):\n",
     "    elif declared and DriverVersion.parse(host) <= DriverVersion.parse(declared):\n",
     "driver-native: host < declared -> <="),
    ("rules.py", "    elif declared and DriverVersion.parse(host) < DriverVersion.parse(declared):\n",
     "    elif declared and True:\n", "driver-native: upgrade comparison -> True"),
    ("rules.py", "            if cuda.release_key(pl.release) >= cuda.release_key(rt):\n",
     "            if cuda.release_key(pl.release) > cuda.release_key(rt):\n", "toolkit-order: >= -> >"),
    ("rules.py", "            elif pl.component == \"cublas\":\n", "            elif False:\n",
     "toolkit-order: cuBLAS branch -> False"),
    ("rules.py", "        return _f(\"cuda-toolkit-order\", \"warn\",\n                  f\"cannot tell",
     "        return _f(\"cuda-toolkit-order\", \"info\",\n                  f\"cannot tell",
     "toolkit-order: unknown toolkit warn -> info"),
    ("rules.py", "        return _f(\"cuda-major\", \"info\",", "        return _f(\"cuda-major\", \"pass\",",
     "cuda-major: coexisting builds info -> pass"),
    ("rules.py", "    if v.conflicts:\n", "    if False:\n", "cuda-major: conflicts ignored"),
    ("rules.py", "    if unknown or unplaced:\n", "    if unknown:\n", "cuda-identity: unplaced components ignored"),
    ("rules.py", "                (judged if ok else bad).append(line)\n", "                judged.append(line)\n",
     "gpu-arch: kernel coverage ignored"),
    ("rules.py", "    if unjudged:\n        return _f(\"gpu-arch\", \"warn\",",
     "    if unjudged:\n        return _f(\"gpu-arch\", \"info\",", "gpu-arch: unjudged warn -> info"),
    ("rules.py", "        level = \"warn\"\n        msgs.append(f\"host driver unknown",
     "        level = \"pass\"\n        msgs.append(f\"host driver unknown", "driver-native: unknown host -> pass"),
    ("rules.py", "    return {3: \"fail\", 2: \"warn\"}.get(worst, \"pass\")",
     "    return {3: \"fail\", 2: \"pass\"}.get(worst, \"pass\")", "verdict: warn counts as pass"),
    ("rules.py", "            g = min(needs)\n", "            g = max(needs)\n",
     "platform-tag: lowest glibc -> highest"),
    ("floors.py", "        out.driver, out.what = max(cands, key=lambda c: DriverVersion.parse(c[0]))\n",
     "        out.driver, out.what = min(cands, key=lambda c: DriverVersion.parse(c[0]))\n",
     "native floor: max -> min"),
    ("floors.py", "        elif have is None or cuda.release_key(pl.release) > cuda.release_key(have):\n",
     "        elif have is None or cuda.release_key(pl.release) >= cuda.release_key(have):\n",
     "JIT risk: > driver release -> >="),
    ("floors.py", "        if i is None or not view.loaded(p):\n            continue\n        places",
     "        if i is None:\n            continue\n        places", "native floor: counts builds that are not loaded"),
    ("loaded.py", "        if shared:\n", "        if False:\n", "coexistence: shared libraries ignored"),
    ("loaded.py",
     "            if m and components.sonames(f.tk, \"cudart\", int(m.group(2))) and lib not in installed:\n",
     "            if False:\n", "providers: missing libcudart/libcublas ignored"),
    ("rules.py", "        elif DriverVersion.parse(host) < DriverVersion.parse(floor):\n",
     "        elif DriverVersion.parse(host) <= DriverVersion.parse(floor):\n", "cuda-bindings: host < floor -> <="),
    ("rules.py", "        other = bool(stack) and major not in stack\n", "        other = False\n",
     "cuda-bindings: another major than the stack's ignored"),
    ("rules.py", "        if row.meta_from and v >= Version(row.meta_from):\n",
     "        if row.meta_from and v > Version(row.meta_from):\n", "cuda-bindings: meta package from -> after"),
    ("rules.py", "    if len(majors) > 1:\n", "    if False:\n", "cuda-bindings: clashing bindings ignored"),
    ("rules.py", "        return _f(\"cuda-bindings\", \"warn\",", "        return _f(\"cuda-bindings\", \"info\",",
     "cuda-bindings: warn -> info"),
    ("rules.py", "            problems.append(f\"host driver unknown: {tag}\")\n",
     "            ok.append(f\"host driver unknown: {tag}\")\n", "cuda-bindings: unknown host driver passes"),
]


def _run(tree: Path, test: Path) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import builder; print(builder.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tree, timeout=60)
    if not probe.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"the mutant copy is not what Python imports: {probe.stdout or probe.stderr}")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(test)],
                         env=env, capture_output=True, text=True, cwd=tree, timeout=600)
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr.strip()[-200:]
    return res.returncode != 0, tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", type=int, action="append", help="run only this mutant (1-based, repeatable)")
    args = ap.parse_args()
    picked = [(i, m) for i, m in enumerate(MUTANTS, 1) if not args.k or i in args.k]
    survived = 0
    with tempfile.TemporaryDirectory(prefix="rule-mutants-") as tmp:
        tree = Path(tmp)
        shutil.copytree(ROOT / "builder", tree / "builder", ignore=shutil.ignore_patterns("__pycache__"))
        (tree / "tests").mkdir()
        for name in ("__init__.py", "test_check_rules.py"):
            shutil.copy(ROOT / "tests" / name, tree / "tests" / name)
        shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
        test = tree / "tests" / "test_check_rules.py"
        ok, tail = _run(tree, test)
        if ok:
            print(f"the unmutated rules fail their tests: {tail}")
            return 2
        for i, (fname, old, new, what) in picked:
            path = tree / "builder" / "check" / fname
            original = path.read_text(encoding="utf-8")
            if original.count(old) != 1:
                print(f"mutant {i} ({what}): its text occurs {original.count(old)} times in {fname}; fix the list")
                return 2
            path.write_text(original.replace(old, new), encoding="utf-8")
            try:
                killed, tail = _run(tree, test)
            finally:
                path.write_text(original, encoding="utf-8")
            survived += not killed
            print(f"mutant {i:2d} {'killed  ' if killed else 'SURVIVED'} {fname}: {what} ({tail})")
    print(f"{len(picked) - survived} of {len(picked)} mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())

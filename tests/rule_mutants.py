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
    ("rules.py", "        return _f(\"cuda-toolkit-order\", Level.WARN,\n                  f\"cannot tell",
     "        return _f(\"cuda-toolkit-order\", Level.INFO,\n                  f\"cannot tell",
     "toolkit-order: unknown toolkit warn -> info"),
    ("rules.py", "        return _f(\"cuda-major\", Level.INFO,", "        return _f(\"cuda-major\", Level.PASS,",
     "cuda-major: coexisting builds info -> pass"),
    ("rules.py", "    if v.conflicts:\n", "    if False:\n", "cuda-major: conflicts ignored"),
    ("rules.py", "    if unknown or unplaced:\n", "    if unknown:\n", "cuda-identity: unplaced components ignored"),
    ("rules.py", "                (judged if ok else bad).append(line)\n", "                judged.append(line)\n",
     "gpu-arch: kernel coverage ignored"),
    ("rules.py", "    if unjudged:\n        return _f(\"gpu-arch\", Level.WARN,",
     "    if unjudged:\n        return _f(\"gpu-arch\", Level.INFO,", "gpu-arch: unjudged warn -> info"),
    ("rules.py", "        level = Level.WARN\n        msgs.append(f\"host driver unknown",
     "        level = Level.PASS\n        msgs.append(f\"host driver unknown", "driver-native: unknown host -> pass"),
    ("rules.py", "    return Level.PASS if w is Level.INFO else w",
     "    return Level.PASS if w in (Level.INFO, Level.WARN) else w", "verdict: warn counts as pass"),
    ("rules.py", "    return Level.PASS if w is Level.INFO else w", "    return w", "verdict: info counts as info"),
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
    ("rules.py", "        return _f(\"cuda-bindings\", Level.WARN,", "        return _f(\"cuda-bindings\", Level.INFO,",
     "cuda-bindings: warn -> info"),
    ("rules.py", "            problems.append(f\"host driver unknown: {tag}\")\n",
     "            ok.append(f\"host driver unknown: {tag}\")\n", "cuda-bindings: unknown host driver passes"),
    # the audit's survivors (issue 9), then comparisons of floors.py, loaded.py, components.py
    ("rules.py", "    if native is None and not nf.no_row:\n",
     "    if native is None:\n", "driver-compat: unknown native floor taken for no CUDA runtime"),
    ("floors.py", "        elif have is None or cuda.release_key(pl.release) > cuda.release_key(have):\n",
     "        elif have is not None and cuda.release_key(pl.release) > cuda.release_key(have):\n",
     "JIT risk: driver older than every table row ignored"),
    ("rules.py", "            g = min(needs)\n",
     "            g = needs[-1]\n", "platform-tag: lowest glibc -> the last wheel's"),
    ("rules.py", "            g = min(needs)\n",
     "            g = needs[0]\n", "platform-tag: lowest glibc -> the first wheel's"),
    ("rules.py", "    if notes and not judged:\n",
     "    if notes:\n", "gpu-arch: judged kernels beside a note pass -> info"),
    ("rules.py", "if p.identity and not p.identity.major and not p.identity.jit_only]",
     "if p.identity and not p.identity.major]", "cuda-identity: JIT-only package unknown"),
    ("rules.py", "            if n not in TORCH_FAMILY or n not in f.packages or not req.specifier:\n",
     "            if n not in TORCH_FAMILY or n not in f.packages:\n", "torch-pin: bare requirement counted as a pin"),
    ("rules.py", "            (ok if good else bad).append(line)\n",
     "            ok.append(line)\n", "torch-pin: mismatch ignored"),
    ("rules.py", "    if v.unsure:\n",
     "    if False:\n", "cuda-major: unsure ignored"),
    ("rules.py", "    if v.coexist:\n",
     "    if False:\n", "cuda-major: coexisting builds pass"),
    ("rules.py", "            if cuda.release_key(pl.release)[0] != cuda.release_key(rt)[0]:\n",
     "            if False:\n", "toolkit-order: compares across majors"),
    ("rules.py", "if hit is not None and pl is not None and hit[0] not in f.k.jit_compilers and hit[0] != \"cccl\":",
     "if hit is not None and pl is not None and hit[0] != \"cccl\":",
     "toolkit-order: run-time compilers judged as libraries"),
    ("rules.py", "    unknown = [p for p in loaded if own_kernels(p, f.k) and _build(p) is None]\n",
     "    unknown = [p for p in loaded if _build(p) is None]\n", "toolkit-order: packages without own kernels unknown"),
    ("rules.py", "    if info:\n        return _f(\"cuda-toolkit-order\", Level.INFO,",
     "    if False:\n        return _f(\"cuda-toolkit-order\", Level.INFO,",
     "toolkit-order: older libraries info -> pass"),
    ("rules.py", "            level = Level.FAIL if level == Level.FAIL else Level.WARN\n",
     "            level = Level.PASS\n", "driver-native: floor meets known but release without row passes"),
    ("rules.py", "        if nf.lower_bound:\n            return _f(\"driver-compat\", Level.PASS",
     "        if False:\n            return _f(\"driver-compat\", Level.PASS", "driver-compat: lower bound not said"),
    ("rules.py", "        if risks:\n            return _f(\"driver-compat\", Level.WARN",
     "        if False:\n            return _f(\"driver-compat\", Level.WARN",
     "driver-compat: JIT risk on a native driver passes"),
    ("rules.py", "            if p.name not in f.k.main_extensions:\n                continue\n",
     "            if False:\n                continue\n", "gpu-arch: judges every package as a main extension"),
    ("rules.py", "    if not carriers and not problems:\n",
     "    if not carriers:\n", "cuda-bindings: unreadable version passes"),
    ("rules.py", "        if len(stack) == 1 and (clash or any(m not in stack for m in majors)):\n",
     "        if len(stack) == 1 and clash:\n", "cuda-bindings: no override fix for another major"),
    ("rules.py", "            lo = max([Version(f\"{s}.0\"), *(m for m in meta if m.major == s)])\n",
     "            lo = min([Version(f\"{s}.0\"), *(m for m in meta if m.major == s)])\n",
     "cuda-bindings: override floor max -> min"),
    ("rules.py", "{max((d for d, _ in floors), key=DriverVersion.parse)}",
     "{min((d for d, _ in floors), key=DriverVersion.parse)}", "cuda-bindings: driver fix max -> min"),
    ("rules.py", "    if infos:\n        return _f(\"cuda-bindings\", Level.INFO",
     "    if False:\n        return _f(\"cuda-bindings\", Level.INFO", "cuda-bindings: other-major info -> pass"),
    ("rules.py", "        if any(tags & supported for _fn, tags in parsed):\n",
     "        if all(tags & supported for _fn, tags in parsed):\n", "platform-tag: one installable wheel -> all"),
    ("rules.py", "                 and t.platform.endswith(f.arch)]\n",
     "]\n", "platform-tag: glibc of another arch's wheel"),
    ("rules.py", "    w = worst(x.level for x in findings)\n",
     "    w = min((x.level for x in findings), key=lambda lv: lv.rank, default=Level.PASS)\n",
     "verdict: worst -> best"),
    ("floors.py", "        if i.release and not i.runtime and not i.build_toolkit and not i.build_release:\n",
     "        if i.release and not i.runtime:\n", "native floor: GA floor beside a build toolkit"),
    ("floors.py", "            elif pl.driver is None:\n",
     "            elif False:\n", "native floor: release without a driver row"),
    ("floors.py", "        if i.toolkit_unknown:\n",
     "        if False:\n", "native floor: unknown toolkit is no lower bound"),
    ("floors.py", "        if hit is None or hit[0] not in f.k.jit_compilers or not view.loaded(p):\n",
     "        if hit is None or hit[0] not in f.k.jit_compilers:\n", "JIT risk: compilers not loaded"),
    ("floors.py", "            if newest and not cuda.updates(f.k, pl.release):\n",
     "            if not cuda.updates(f.k, pl.release):\n", "JIT risk: no-row message on an older driver"),
    ("floors.py", "            if newest and not cuda.updates(f.k, pl.release):\n",
     "            if False:\n", "JIT risk: no driver row not said"),
    ("loaded.py", "    if len(by_major) > 1:\n",
     "    if len(by_major) > 2:\n", "loaded: two core majors conflict > 1 -> > 2"),
    ("loaded.py", "        if len(v.majors) > 1:\n",
     "        if len(v.majors) > 2:\n", "loaded: libraries of two majors without a framework"),
    ("loaded.py", "        if i is None or not i.major or i.major <= v.majors or p.name in core_names:\n",
     "        if i is None or not i.major or i.major < v.majors or p.name in core_names:\n", "loaded: subset <= -> <"),
    ("loaded.py", "        peers = [q for q in fams.get(fam, []) if q.identity and q.identity.major <= v.majors]\n",
     "        peers = [q for q in fams.get(fam, []) if q.identity]\n", "loaded: peers of any major"),
    ("loaded.py", "            if any(kind == \"conflict\" for kind, _ev in verdicts):\n",
     "            if all(kind == \"conflict\" for kind, _ev in verdicts):\n", "loaded: one conflict -> all"),
    ("loaded.py", "            elif verdicts:\n",
     "            elif False:\n", "loaded: coexisting peers unsure"),
    ("loaded.py", "            if mine and theirs and set(mine) & set(theirs):\n",
     "            if False:\n", "loaded: a component installing the loaded file coexists"),
    ("loaded.py", "    if x.files is not None and y.files is not None:\n",
     "    if x.files is not None or y.files is not None:\n", "loaded: one file list is enough"),
    ("loaded.py", "    if set(px) & set(py):\n",
     "    if False:\n", "loaded: table paths never conflict"),
    ("loaded.py", "        if len(majors) > 1:\n",
     "        if len(majors) >= 1:\n", "file lists: wanted for one major"),
    ("components.py", "    driver = max((r.driver for r in rows), key=DriverVersion.parse) if rows else None\n",
     "    driver = min((r.driver for r in rows), key=DriverVersion.parse) if rows else None\n",
     "release place: highest update floor -> lowest"),
    ("components.py", "    if versioning(tk, component) == \"toolkit\" or component in k.release_from_version:\n",
     "    if versioning(tk, component) == \"toolkit\" and component in k.release_from_version:\n",
     "place: by release version or -> and"),
    ("components.py", "        if re.fullmatch(r\"\\d+\\.\\d+\", rel) and _known_release(k, tk, rel):\n",
     "        if re.fullmatch(r\"\\d+\\.\\d+\", rel):\n", "place: unknown releases placed"),
    ("components.py", "    met = [r for _key, r in ga if DriverVersion.parse(r.driver) <= have]\n",
     "    met = [r for _key, r in ga if DriverVersion.parse(r.driver) < have]\n", "driver release: <= -> <"),
    ("components.py", "    return met[-1].release, met[-1] is ga[-1][1]\n",
     "    return met[0].release, met[-1] is ga[-1][1]\n", "driver release: newest met -> oldest"),
    ("components.py", "    return met[-1].release, met[-1] is ga[-1][1]\n",
     "    return met[-1].release, False\n", "driver release: never at the newest row"),
    ("components.py", "    files = c.files12 if major == 12 else c.files13 if major == 13 else \"\"\n",
     "    files = c.files12 if major == 12 else \"\"\n", "sonames: CUDA 13 none"),
    ("components.py", "    files = (c.files12 if major == 12 else c.files13 if major == 13 else \"\").split()\n",
     "    files = (c.files12 if major <= 13 else \"\").split()\n", "install paths: CUDA 13 paths are CUDA 12's"),
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

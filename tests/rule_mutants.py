"""Prove the pure rule tests bite: mutate one comparison of the rules at a time and run the
rules' tests against the mutant; every mutant must be killed (a red test).  The check rules
(builder/check/) are judged by tests/test_check_rules.py, the suggest rules (builder/suggest/:
data skips, policies, release selection, torch's CUDA line, fleet answers, keys) by
tests/test_suggest_rules.py.

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

#: The test file that judges the mutants of each package.
TESTS = {"check": "test_check_rules.py", "suggest": "test_suggest_rules.py"}

# (file under builder/, old text (must occur exactly once), new text, what it breaks)
MUTANTS: list[tuple[str, str, str, str]] = [
    ("check/rules.py", "    elif DriverVersion.parse(host) >= DriverVersion.parse(native):\n",
     "    elif DriverVersion.parse(host) > DriverVersion.parse(native):\n", "driver-native: >= native -> >"),
    ("check/rules.py", "    if native is not None and DriverVersion.parse(host) >= DriverVersion.parse(native):\n",
     "    if native is not None and DriverVersion.parse(host) > DriverVersion.parse(native):\n",
     "driver-compat: >= native -> >"),
    ("check/rules.py", "    if native is not None and DriverVersion.parse(host) >= DriverVersion.parse(native):\n",
     "    if native is not None and True:\n", "driver-compat: native floor comparison -> True"),
    ("check/rules.py", "    if cmin and DriverVersion.parse(host) >= DriverVersion.parse(cmin):\n",
     "    if cmin and DriverVersion.parse(host) > DriverVersion.parse(cmin):\n", "driver-compat: >= compat -> >"),
    ("check/rules.py", "    if cmin and DriverVersion.parse(host) >= DriverVersion.parse(cmin):\n",
     "    if False:\n", "driver-compat: compat floor comparison -> False"),
    ("check/rules.py", "    if declared and DriverVersion.parse(declared) < DriverVersion.parse(native):\n",
     "    if declared and DriverVersion.parse(declared) <= DriverVersion.parse(native):\n",
     "driver-native: declared < native -> <="),
    ("check/rules.py", "    elif declared and DriverVersion.parse(host) < DriverVersion.parse(declared):\n",
     "    elif declared and DriverVersion.parse(host) <= DriverVersion.parse(declared):\n",
     "driver-native: host < declared -> <="),
    ("check/rules.py", "    elif declared and DriverVersion.parse(host) < DriverVersion.parse(declared):\n",
     "    elif declared and True:\n", "driver-native: upgrade comparison -> True"),
    ("check/rules.py", "            if cuda.release_key(pl.release) >= cuda.release_key(rt):\n",
     "            if cuda.release_key(pl.release) > cuda.release_key(rt):\n", "toolkit-order: >= -> >"),
    ("check/rules.py", "            elif pl.component == \"cublas\":\n", "            elif False:\n",
     "toolkit-order: cuBLAS branch -> False"),
    ("check/rules.py", "        return _f(\"cuda-toolkit-order\", Level.WARN,\n                  f\"cannot tell",
     "        return _f(\"cuda-toolkit-order\", Level.INFO,\n                  f\"cannot tell",
     "toolkit-order: unknown toolkit warn -> info"),
    ("check/rules.py", "        return _f(\"cuda-major\", Level.INFO,", "        return _f(\"cuda-major\", Level.PASS,",
     "cuda-major: coexisting builds info -> pass"),
    ("check/rules.py", "    if v.conflicts:\n", "    if False:\n", "cuda-major: conflicts ignored"),
    ("check/rules.py",
     "    if unknown or unplaced:\n", "    if unknown:\n", "cuda-identity: unplaced components ignored"),
    ("check/rules.py",
     "                (judged if ok else bad).append(line)\n", "                judged.append(line)\n",
     "gpu-arch: kernel coverage ignored"),
    ("check/rules.py", "    if unjudged:\n        return _f(\"gpu-arch\", Level.WARN,",
     "    if unjudged:\n        return _f(\"gpu-arch\", Level.INFO,", "gpu-arch: unjudged warn -> info"),
    ("check/rules.py", "        level = Level.WARN\n        msgs.append(f\"host driver unknown",
     "        level = Level.PASS\n        msgs.append(f\"host driver unknown", "driver-native: unknown host -> pass"),
    ("check/rules.py", "    return Level.PASS if w is Level.INFO else w",
     "    return Level.PASS if w in (Level.INFO, Level.WARN) else w", "verdict: warn counts as pass"),
    ("check/rules.py",
     "    return Level.PASS if w is Level.INFO else w", "    return w", "verdict: info counts as info"),
    ("check/rules.py", "            g = min(needs)\n", "            g = max(needs)\n",
     "platform-tag: lowest glibc -> highest"),
    ("check/floors.py", "        out.driver, out.what = max(cands, key=lambda c: DriverVersion.parse(c[0]))\n",
     "        out.driver, out.what = min(cands, key=lambda c: DriverVersion.parse(c[0]))\n",
     "native floor: max -> min"),
    ("check/floors.py", "        elif have is None or cuda.release_key(pl.release) > cuda.release_key(have):\n",
     "        elif have is None or cuda.release_key(pl.release) >= cuda.release_key(have):\n",
     "JIT risk: > driver release -> >="),
    ("check/floors.py", "        if i is None or not view.loaded(p):\n            continue\n        places",
     "        if i is None:\n            continue\n        places", "native floor: counts builds that are not loaded"),
    ("check/loaded.py", "        if shared:\n", "        if False:\n", "coexistence: shared libraries ignored"),
    ("check/loaded.py",
     "            if m and components.sonames(f.tk, \"cudart\", int(m.group(2))) and lib not in installed:\n",
     "            if False:\n", "providers: missing libcudart/libcublas ignored"),
    ("check/rules.py", "        elif DriverVersion.parse(host) < DriverVersion.parse(floor):\n",
     "        elif DriverVersion.parse(host) <= DriverVersion.parse(floor):\n", "cuda-bindings: host < floor -> <="),
    ("check/rules.py", "        other = bool(stack) and major not in stack\n", "        other = False\n",
     "cuda-bindings: another major than the stack's ignored"),
    ("check/rules.py", "        if row.meta_from and v >= Version(row.meta_from):\n",
     "        if row.meta_from and v > Version(row.meta_from):\n", "cuda-bindings: meta package from -> after"),
    ("check/rules.py", "    if len(majors) > 1:\n", "    if False:\n", "cuda-bindings: clashing bindings ignored"),
    ("check/rules.py",
     "        return _f(\"cuda-bindings\", Level.WARN,", "        return _f(\"cuda-bindings\", Level.INFO,",
     "cuda-bindings: warn -> info"),
    ("check/rules.py", "            problems.append(f\"host driver unknown: {tag}\")\n",
     "            ok.append(f\"host driver unknown: {tag}\")\n", "cuda-bindings: unknown host driver passes"),
    # the audit's survivors (issue 9), then comparisons of floors.py, loaded.py, components.py
    ("check/rules.py", "    if native is None and not nf.no_row:\n",
     "    if native is None:\n", "driver-compat: unknown native floor taken for no CUDA runtime"),
    ("check/floors.py", "        elif have is None or cuda.release_key(pl.release) > cuda.release_key(have):\n",
     "        elif have is not None and cuda.release_key(pl.release) > cuda.release_key(have):\n",
     "JIT risk: driver older than every table row ignored"),
    ("check/rules.py", "            g = min(needs)\n",
     "            g = needs[-1]\n", "platform-tag: lowest glibc -> the last wheel's"),
    ("check/rules.py", "            g = min(needs)\n",
     "            g = needs[0]\n", "platform-tag: lowest glibc -> the first wheel's"),
    ("check/rules.py", "    if notes and not judged:\n",
     "    if notes:\n", "gpu-arch: judged kernels beside a note pass -> info"),
    ("check/rules.py", "if p.identity and not p.identity.major and not p.identity.jit_only\n",
     "if p.identity and not p.identity.major and True\n", "cuda-identity: JIT-only package unknown"),
    ("check/rules.py", "               and not p.identity.tool and not p.identity.cpu_build]\n",
     "               and not p.identity.cpu_build]\n", "cuda-identity: CUDA tool wheels unknown"),
    ("check/rules.py", "               and not p.identity.tool and not p.identity.cpu_build]\n",
     "               and not p.identity.tool]\n", "cuda-identity: a CPU torch unknown"),
    ("check/rules.py", "        if cuda_users:\n", "        if False:\n",
     "cuda-identity: CUDA vLLM beside a CPU torch passes"),
    ("check/rules.py", "if p.name != \"torch\" and p.identity and p.identity.major]\n",
     "if p.name != \"torch\" and p.identity]\n", "cuda-identity: what follows a CPU torch counted as CUDA"),
    ("check/rules.py", "            if n not in TORCH_FAMILY or n not in f.packages or not req.specifier:\n",
     "            if n not in TORCH_FAMILY or n not in f.packages:\n", "torch-pin: bare requirement counted as a pin"),
    ("check/rules.py", "            (ok if good else bad).append(line)\n",
     "            ok.append(line)\n", "torch-pin: mismatch ignored"),
    ("check/rules.py", "    if v.unsure:\n",
     "    if False:\n", "cuda-major: unsure ignored"),
    ("check/rules.py", "    if v.coexist:\n",
     "    if False:\n", "cuda-major: coexisting builds pass"),
    ("check/rules.py", "            if cuda.release_key(pl.release)[0] != cuda.release_key(rt)[0]:\n",
     "            if False:\n", "toolkit-order: compares across majors"),
    ("check/rules.py",
     "if hit is not None and pl is not None and hit[0] not in f.k.jit_compilers and hit[0] != \"cccl\":",
     "if hit is not None and pl is not None and hit[0] != \"cccl\":",
     "toolkit-order: run-time compilers judged as libraries"),
    ("check/rules.py", "    unknown = [p for p in loaded if own_kernels(p, f.k) and _build(p) is None]\n",
     "    unknown = [p for p in loaded if _build(p) is None]\n", "toolkit-order: packages without own kernels unknown"),
    ("check/rules.py", "    if info:\n        return _f(\"cuda-toolkit-order\", Level.INFO,",
     "    if False:\n        return _f(\"cuda-toolkit-order\", Level.INFO,",
     "toolkit-order: older libraries info -> pass"),
    ("check/rules.py", "            level = Level.FAIL if level == Level.FAIL else Level.WARN\n",
     "            level = Level.PASS\n", "driver-native: floor meets known but release without row passes"),
    ("check/rules.py", "        if nf.lower_bound:\n            return _f(\"driver-compat\", Level.PASS",
     "        if False:\n            return _f(\"driver-compat\", Level.PASS", "driver-compat: lower bound not said"),
    ("check/rules.py", "        if risks:\n            return _f(\"driver-compat\", Level.WARN",
     "        if False:\n            return _f(\"driver-compat\", Level.WARN",
     "driver-compat: JIT risk on a native driver passes"),
    ("check/rules.py", "            if p.name not in f.k.main_extensions:\n                continue\n",
     "            if False:\n                continue\n", "gpu-arch: judges every package as a main extension"),
    ("check/rules.py", "    if not carriers and not problems:\n",
     "    if not carriers:\n", "cuda-bindings: unreadable version passes"),
    ("check/rules.py", "        if len(stack) == 1 and (clash or any(m not in stack for m in majors)):\n",
     "        if len(stack) == 1 and clash:\n", "cuda-bindings: no override fix for another major"),
    ("check/rules.py", "            lo = max([Version(f\"{s}.0\"), *(m for m in meta if m.major == s)])\n",
     "            lo = min([Version(f\"{s}.0\"), *(m for m in meta if m.major == s)])\n",
     "cuda-bindings: override floor max -> min"),
    ("check/rules.py", "{max((d for d, _ in floors), key=DriverVersion.parse)}",
     "{min((d for d, _ in floors), key=DriverVersion.parse)}", "cuda-bindings: driver fix max -> min"),
    ("check/rules.py", "    if infos:\n        return _f(\"cuda-bindings\", Level.INFO",
     "    if False:\n        return _f(\"cuda-bindings\", Level.INFO", "cuda-bindings: other-major info -> pass"),
    ("check/rules.py", "        if any(tags & supported for _fn, tags in parsed):\n",
     "        if all(tags & supported for _fn, tags in parsed):\n", "platform-tag: one installable wheel -> all"),
    ("check/rules.py", "                 and t.platform.endswith(f.arch)]\n",
     "]\n", "platform-tag: glibc of another arch's wheel"),
    ("check/rules.py", "    w = worst(x.level for x in findings)\n",
     "    w = min((x.level for x in findings), key=lambda lv: lv.rank, default=Level.PASS)\n",
     "verdict: worst -> best"),
    ("check/floors.py", "        if i.release and not i.runtime and not i.build_toolkit and not i.build_release:\n",
     "        if i.release and not i.runtime:\n", "native floor: GA floor beside a build toolkit"),
    ("check/floors.py", "            elif pl.driver is None:\n",
     "            elif False:\n", "native floor: release without a driver row"),
    ("check/floors.py", "        if i.toolkit_unknown:\n",
     "        if False:\n", "native floor: unknown toolkit is no lower bound"),
    ("check/floors.py", "        if hit is None or hit[0] not in f.k.jit_compilers or not view.loaded(p):\n",
     "        if hit is None or hit[0] not in f.k.jit_compilers:\n", "JIT risk: compilers not loaded"),
    ("check/floors.py", "            if newest and not cuda.updates(f.k, pl.release):\n",
     "            if not cuda.updates(f.k, pl.release):\n", "JIT risk: no-row message on an older driver"),
    ("check/floors.py", "            if newest and not cuda.updates(f.k, pl.release):\n",
     "            if False:\n", "JIT risk: no driver row not said"),
    ("check/loaded.py", "    if len(by_major) > 1:\n",
     "    if len(by_major) > 2:\n", "loaded: two core majors conflict > 1 -> > 2"),
    ("check/loaded.py", "        if len(v.majors) > 1:\n",
     "        if len(v.majors) > 2:\n", "loaded: libraries of two majors without a framework"),
    ("check/loaded.py", "        if i is None or not i.major or i.major <= v.majors or p.name in core_names:\n",
     "        if i is None or not i.major or i.major < v.majors or p.name in core_names:\n", "loaded: subset <= -> <"),
    ("check/loaded.py",
     "        peers = [q for q in fams.get(fam, []) if q.identity and q.identity.major <= v.majors]\n",
     "        peers = [q for q in fams.get(fam, []) if q.identity]\n", "loaded: peers of any major"),
    ("check/loaded.py", "            if any(kind == \"conflict\" for kind, _ev in verdicts):\n",
     "            if all(kind == \"conflict\" for kind, _ev in verdicts):\n", "loaded: one conflict -> all"),
    ("check/loaded.py", "            elif verdicts:\n",
     "            elif False:\n", "loaded: coexisting peers unsure"),
    ("check/loaded.py", "            if mine and theirs and set(mine) & set(theirs):\n",
     "            if False:\n", "loaded: a component installing the loaded file coexists"),
    ("check/loaded.py", "    if x.files is not None and y.files is not None:\n",
     "    if x.files is not None or y.files is not None:\n", "loaded: one file list is enough"),
    ("check/loaded.py", "    if set(px) & set(py):\n",
     "    if False:\n", "loaded: table paths never conflict"),
    ("check/loaded.py", "        if len(majors) > 1:\n",
     "        if len(majors) >= 1:\n", "file lists: wanted for one major"),
    ("check/components.py", "    driver = max((r.driver for r in rows), key=DriverVersion.parse) if rows else None\n",
     "    driver = min((r.driver for r in rows), key=DriverVersion.parse) if rows else None\n",
     "release place: highest update floor -> lowest"),
    ("check/components.py", "    if versioning(tk, component) == \"toolkit\" or component in k.release_from_version:\n",
     "    if versioning(tk, component) == \"toolkit\" and component in k.release_from_version:\n",
     "place: by release version or -> and"),
    ("check/components.py", "        if re.fullmatch(r\"\\d+\\.\\d+\", rel) and _known_release(k, tk, rel):\n",
     "        if re.fullmatch(r\"\\d+\\.\\d+\", rel):\n", "place: unknown releases placed"),
    ("check/components.py", "    met = [r for _key, r in ga if DriverVersion.parse(r.driver) <= have]\n",
     "    met = [r for _key, r in ga if DriverVersion.parse(r.driver) < have]\n", "driver release: <= -> <"),
    ("check/components.py", "    return met[-1].release, met[-1] is ga[-1][1]\n",
     "    return met[0].release, met[-1] is ga[-1][1]\n", "driver release: newest met -> oldest"),
    ("check/components.py", "    return met[-1].release, met[-1] is ga[-1][1]\n",
     "    return met[-1].release, False\n", "driver release: never at the newest row"),
    ("check/components.py", "    files = c.files12 if major == 12 else c.files13 if major == 13 else \"\"\n",
     "    files = c.files12 if major == 12 else \"\"\n", "sonames: CUDA 13 none"),
    ("check/components.py", "    files = (c.files12 if major == 12 else c.files13 if major == 13 else \"\").split()\n",
     "    files = (c.files12 if major <= 13 else \"\").split()\n", "install paths: CUDA 13 paths are CUDA 12's"),
    # builder/suggest: the data skips, each at its boundary
    ("suggest/skips.py", "    if DriverVersion.parse(driver) >= DriverVersion.parse(line.compat):\n",
     "    if DriverVersion.parse(driver) > DriverVersion.parse(line.compat):\n", "cuda-driver: >= compat -> >"),
    ("suggest/skips.py", "    if DriverVersion.parse(driver) >= DriverVersion.parse(line.compat):\n",
     "    if DriverVersion.parse(driver) >= DriverVersion.parse(line.native or line.compat):\n",
     "cuda-driver: the native floor taken for the compatibility floor"),
    ("suggest/skips.py", "    if line is None or driver is None or line.compat is None:\n",
     "    if line is None or line.compat is None:\n", "cuda-driver: an unknown host driver skips"),
    ("suggest/skips.py", "    if DriverVersion.parse(driver) >= DriverVersion.parse(line.native):\n",
     "    if DriverVersion.parse(driver) > DriverVersion.parse(line.native):\n", "native-floor: >= native -> >"),
    ("suggest/skips.py", "    if DriverVersion.parse(driver) >= DriverVersion.parse(line.native):\n",
     "    if DriverVersion.parse(driver) >= DriverVersion.parse(line.compat or line.native):\n",
     "native-floor: the compatibility floor taken for the native floor"),
    ("suggest/skips.py", "    if line is None or driver is None or line.native is None:\n",
     "    if line is None or driver is None:\n", "native-floor: a release without a driver row skips"),
    ("suggest/skips.py", "        if prob is not None:\n", "        if prob is None:\n",
     "cuda-arch: supported GPUs skip, old ones pass"),
    ("suggest/skips.py", "    for cc in ccs:\n", "    for cc in ccs[:1]:\n", "cuda-arch: only the first GPU judged"),
    ("suggest/skips.py", "        ok = spec.contains(Version(torch_version), prereleases=True)\n",
     "        ok = spec.contains(Version(torch_version), prereleases=False)\n",
     "torch-constraint: a pre-release torch outside any range"),
    ("suggest/skips.py", "    if ok:\n        return None\n    return Skip(rule=\"torch-constraint\"",
     "    if not ok:\n        return None\n    return Skip(rule=\"torch-constraint\"", "torch-constraint: inverted"),
    ("suggest/skips.py", "    if not available:\n", "    if False:\n", "torch-pin: a torch the index lacks kept"),
    ("suggest/skips.py", "    if found:\n", "    if not found:\n", "no-wheel: inverted"),
    # the policies
    ("suggest/policy.py", "            if DriverVersion.parse(driver) < DriverVersion.parse(j.native_floor):\n",
     "            if DriverVersion.parse(driver) <= DriverVersion.parse(j.native_floor):\n",
     "native: host < native floor -> <="),
    ("suggest/policy.py", "            if j.native_floor is None or not j.native_exact:\n",
     "            if j.native_floor is None:\n", "native: a lower-bound floor accepted"),
    ("suggest/policy.py", "            if driver is None:\n", "            if False:\n",
     "native: an unknown host driver accepted"),
    ("suggest/policy.py", "            if j.verdict != \"pass\":\n", "            if j.verdict == \"fail\":\n",
     "strict: warn accepted"),
    ("suggest/policy.py", "    if policy in (\"native\", \"strict\"):\n        for j in judgements:\n",
     "    if policy == \"native\":\n        for j in judgements:\n", "strict: the native floor not required"),
    ("suggest/policy.py", "        if j.verdict == \"fail\" and f is not None:\n",
     "        if j.verdict == \"fail\" and f is None:\n", "default: a fail accepted"),
    ("suggest/policy.py", "    if not judgements:\n        return False", "    if not judgements:\n        return True",
     "nothing judged accepted"),
    ("suggest/policy.py", "    worst = \"warn\" if any(j.verdict == \"warn\" for j in judgements) else \"pass\"\n",
     "    worst = \"warn\" if all(j.verdict == \"warn\" for j in judgements) else \"pass\"\n",
     "default: a warn on one Python of two said to pass"),
    ("suggest/policy.py",
     "    first, second = (native, compat) if policy in (\"native\", \"strict\") else (compat, native)\n",
     "    first, second = (native, compat) if policy == \"native\" else (compat, native)\n",
     "declared floor: strict declares the compatibility floor"),
    ("suggest/policy.py", "    return first or second or fallback\n", "    return first or fallback\n",
     "declared floor: no fallback to the other floor"),
    ("suggest/policy.py", "    return driver_max(*(n for n, _c in floors)), driver_max(*(c for _n, c in floors))\n",
     "    return driver_max(*(n for n, _c in floors[:1])), driver_max(*(c for _n, c in floors))\n",
     "stack floors: the first Python's native floor, not the highest"),
    ("suggest/policy.py", "    return \"strict\" if strict else \"native\" if native else \"default\"\n",
     "    return \"native\" if native else \"strict\" if strict else \"default\"\n", "choose: --native beats --strict"),
    # release selection and wheel picking
    ("suggest/releases.py", "    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)\n",
     "    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)\n", "cut-off: the start of the day"),
    ("suggest/releases.py", "    return t is not None and t < until\n", "    return t is not None and t <= until\n",
     "visible: a file at the cut-off seen"),
    ("suggest/releases.py", "    return t is not None and t < until\n", "    return t is None or t < until\n",
     "visible: a file without an upload time seen"),
    ("suggest/releases.py", "        if spec is not None and not spec.contains(r.key, prereleases=True):\n",
     "        if spec is not None and not spec.contains(r.key, prereleases=False):\n",
     "select: a range never takes a pre-release"),
    ("suggest/releases.py", "        if r.prerelease and not pre and not (spec is not None and spec.prereleases):\n",
     "        if r.prerelease and not pre:\n", "select: a range naming a pre-release does not take it"),
    ("suggest/releases.py", "        live = files if yanked else tuple(f for f in files if not f.yanked)\n",
     "        live = files\n", "select: yanked files tried"),
    ("suggest/releases.py", "        if hits and (best is None or min(hits) < best[0]):\n",
     "        if hits and (best is None or min(hits) > best[0]):\n", "pick_wheel: the worst tag"),
    ("suggest/releases.py", "        if not f.is_wheel or not python_ok(f, python):\n",
     "        if not f.is_wheel:\n", "pick_wheel: requires-python ignored"),
    ("suggest/releases.py", "        if spec.contains(r.key, prereleases=bool(spec.prereleases)):\n",
     "        if spec.contains(r.key, prereleases=True):\n", "torch range: a pre-release taken"),
    ("suggest/releases.py", "        if v is None or (f.filename, f.sha256) in seen:\n",
     "        if v is None:\n", "group: a file listed twice counted twice"),
    ("suggest/releases.py", "    return sorted(out, key=lambda r: r.key, reverse=True)\n",
     "    return sorted(out, key=lambda r: r.key)\n", "group: oldest first"),
    # torch's CUDA line
    ("suggest/cudaline.py", "        if comp != \"cudart\":\n", "        if comp == \"cudart\":\n",
     "torch line: from a component other than cudart"),
    # the fleet
    ("suggest/fleet.py", "    return next((i for i, r in enumerate(rows) if r.outcomes[host].accepted), None)\n",
     "    return next((i for i, r in enumerate(rows) if r.outcomes[0].accepted), None)\n",
     "answer: the first host's for every host"),
    ("suggest/fleet.py", "if r.outcomes and all(o.accepted for o in r.outcomes)), None)\n",
     "if r.outcomes and any(o.accepted for o in r.outcomes)), None)\n", "common: one host's answer for all"),
    ("suggest/fleet.py", "    end = len(rows) if stop is None else stop\n", "    end = stop or len(rows)\n",
     "unjudged: an answer in the first row ignored"),
    ("suggest/fleet.py", "    return [r.vllm for r in rows[:end] if any(o.status == NOT_JUDGED for o in r.outcomes)]\n",
     "    return [r.vllm for r in rows[:end] if all(o.status == NOT_JUDGED for o in r.outcomes)]\n",
     "unjudged: one host's unjudged row decided"),
    ("suggest/fleet.py", "    oldest = min(known, key=lambda g: tuple(int(x) for x in g.split(\".\")[:2]))\n",
     "    oldest = max(known, key=lambda g: tuple(int(x) for x in g.split(\".\")[:2]))\n",
     "platform: the newest glibc"),
    ("suggest/fleet.py", "    oldest = min(known, key=lambda g: tuple(int(x) for x in g.split(\".\")[:2]))\n",
     "    oldest = min(known)\n", "platform: glibc compared as text (2.17 before 2.5)"),
    # the keys results are kept under
    ("suggest/stack.py",
     "    return {\"requirements\": m.requirements(), \"python\": python, \"platform\": m.platform,\n",
     "    return {\"requirements\": m.requirements(), \"platform\": m.platform,\n",
     "resolution key: the Python left out"),
    ("suggest/stack.py", "                 \"wheels\": dict(sorted(wheels.items()))})\n", "                 })\n",
     "resolution key: the wheels read left out"),
]


def _probe(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import builder; print(builder.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tree, timeout=60)
    if not probe.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"the mutant copy is not what Python imports: {probe.stdout or probe.stderr}")


def _run(tree: Path, test: Path) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
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
        for name in ("__init__.py", *TESTS.values()):
            shutil.copy(ROOT / "tests" / name, tree / "tests" / name)
        shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
        _probe(tree)  # the copy, not the working tree, is what the runs import (one PYTHONPATH for all)
        for name in sorted({TESTS[m[0].split("/")[0]] for _i, m in picked}):
            ok, tail = _run(tree, tree / "tests" / name)
            if ok:
                print(f"the unmutated rules fail {name}: {tail}")
                return 2
        for i, (fname, old, new, what) in picked:
            path = tree / "builder" / fname
            original = path.read_text(encoding="utf-8")
            if original.count(old) != 1:
                print(f"mutant {i} ({what}): its text occurs {original.count(old)} times in {fname}; fix the list")
                return 2
            path.write_text(original.replace(old, new), encoding="utf-8")
            try:
                killed, tail = _run(tree, tree / "tests" / TESTS[fname.split("/")[0]])
            finally:
                path.write_text(original, encoding="utf-8")
            survived += not killed
            print(f"mutant {i:3d} {'killed  ' if killed else 'SURVIVED'} {fname}: {what} ({tail})")
    print(f"{len(picked) - survived} of {len(picked)} mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())

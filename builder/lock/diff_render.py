"""Text and Markdown views of ``lock diff`` results (pure: strings in, strings out).

The Markdown is a pull-request body: a summary table (one row per lock), then
per changed lock its packages, the CUDA view, the driver floors, the verdict
and the findings whose level changed, then how to accept or pin back.
"""

from __future__ import annotations

from typing import Any

from builder.lock.diff import CUDA_FIELDS, LockDiff, finding_changes

_FIELD_NAMES = {"version": "version", "runtime": "runtime", "cudart_soname": "cudart", "cublas": "cuBLAS",
                "build_toolkit": "build toolkit"}


def _arrow(a: object, b: object, *, md: bool = False) -> str:
    a, b = a or "-", b or "-"
    if a == b:
        return str(a)
    return f"{a} → **{b}**" if md else f"{a} -> {b}"


def package_summary(d: LockDiff) -> str:
    """``2 changed, 1 added, 0 removed, 1 rehashed`` or ``unchanged``."""
    p = d.packages
    if not p.count:
        return "unchanged" + (" (re-stamped)" if not d.same_bytes else "")
    parts = [f"{len(p.changed)} changed"] if p.changed else []
    parts += [f"{len(p.added)} added"] if p.added else []
    parts += [f"{len(p.removed)} removed"] if p.removed else []
    parts += [f"{len(p.rehashed)} rehashed"] if p.rehashed else []
    return ", ".join(parts)


def _file_line(f: dict[str, Any]) -> str:
    short = {k: (f[k] or "")[:12] for k in ("old", "new")}
    if f["kind"] == "rehashed":
        return f"{f['filename']} sha256 {short['old']} -> {short['new']} (same name, other bytes: re-uploaded)"
    return f"{f['filename']} {'added' if f['kind'] == 'file-added' else 'removed'} for the same version"


def _floor(d: LockDiff, side: str, key: str) -> Any:
    return (d.to_json()["driver"][side] or {}).get(key)


def _host_line(d: LockDiff) -> str:
    h = d.host
    ccs = ", ".join(h.get("gpu_cc") or []) or "unknown"
    return f"driver {h.get('driver') or 'unknown'}, GPU compute capability {ccs} ({h.get('origin')})"


# --------------------------------------------------------------------------- text


def render_text(diffs: list[LockDiff]) -> str:
    blocks = [_text_one(d) for d in diffs]
    if not diffs:
        return "no locks to compare"
    changed = sum(1 for d in diffs if d.packages.count)
    reg = sum(1 for d in diffs if d.regression)
    warned = sum(len(d.new_warnings) for d in diffs)
    tail = f"{len(diffs)} locks: {changed} with package changes, " + (
        f"{reg} REGRESSION{'S' if reg > 1 else ''}" if reg else "no regression") + (
        f", {warned} new warning{'s' if warned > 1 else ''}" if warned else "")
    return "\n\n".join(blocks) + ("\n\n" + tail if len(diffs) > 1 else "")


def _text_one(d: LockDiff) -> str:
    where = f"{d.old_where or '(none)'} -> {d.new_where or '(none)'}"
    lines = [where if d.label == d.new_where else f"{d.label}: {where}",
             f"  packages: {package_summary(d)}"]
    p = d.packages
    lines += [f"    ~ {c['name']} {c['old']} -> {c['new']}" for c in p.changed]
    lines += [f"    + {c['name']} {c['version']}" for c in p.added]
    lines += [f"    - {c['name']} {c['version']}" for c in p.removed]
    for r in p.rehashed:
        lines += [f"    ! {r['name']} {r['version']}: {_file_line(f)}" for f in r["files"]]
    if d.identical:
        return "\n".join(lines)
    lines.append(f"  judged on: {_host_line(d)}")
    cuda = [c for c in d.cuda if c["changed"]]
    if cuda:
        lines.append("  CUDA:")
        for c in cuda:
            a, b = c["old"] or {}, c["new"] or {}
            what = "; ".join(f"{_FIELD_NAMES[k]} {_arrow(a.get(k), b.get(k))}" for k in c["changed"])
            lines.append(f"    {c['name']}: {what}")
    else:
        lines.append("  CUDA: no change in runtime, cudart, cuBLAS or build toolkit")
    lines.append(f"  driver floors: native {_arrow(_floor(d, 'old', 'native_min'), _floor(d, 'new', 'native_min'))}"
                 f", minor-version compat {_arrow(_floor(d, 'old', 'compat_min'), _floor(d, 'new', 'compat_min'))}")
    v = {k: (str(x).upper() if x else None) for k, x in d.to_json()["verdict"].items()}
    lines.append(f"  verdict: {_arrow(v['old'], v['new'])}")
    for f in finding_changes(d.old_report, d.new_report):
        lines.append(f"  {f['id']}: {f['old'] or '-'} -> {f['new'] or '-'}: {f['message']}")
    lines += [f"  REGRESSION: {r}" for r in d.regressions] or ["  regression: none"]
    lines += [f"  {w} (does not block)" for w in d.new_warnings]
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown


def _cell(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_md(diffs: list[LockDiff], title: str = "Lock changes") -> str:
    """A pull-request body for ``diffs``."""
    changed = [d for d in diffs if d.packages.count]
    reg = [d for d in diffs if d.regression]
    warned = [(d, w) for d in diffs for w in d.new_warnings]
    head = f"## {title}: {len(changed)} of {len(diffs)} locks with package changes, " + (
        f"**{len(reg)} regression{'s' if len(reg) > 1 else ''}**" if reg else "no regression")
    if warned:
        head += f", {len(warned)} new warning{'s' if len(warned) > 1 else ''}"
    out = [head, ""]
    if reg:
        out += ["> [!CAUTION]", "> A regression: do not merge as is."] + [
            f"> - `{d.label}`: {_cell(r)}" for d in reg for r in d.regressions] + [""]
    if warned:
        out += ["> [!WARNING]", "> A new warning (it does not block): read it before merging."] + [
            f"> - `{d.label}`: {_cell(w)}" for d, w in warned] + [""]
    out += ["| lock | packages | native driver floor | verdict | regression |", "|---|---|---|---|---|"]
    for d in diffs:
        if d.identical:
            out.append(f"| `{d.label}` | {package_summary(d)} | | | |")
            continue
        v = d.to_json()["verdict"]
        out.append(f"| `{d.label}` | {package_summary(d)} | "
                   f"{_arrow(_floor(d, 'old', 'native_min'), _floor(d, 'new', 'native_min'), md=True)} | "
                   f"{_arrow(v['old'], v['new'], md=True)} | {'**yes**' if d.regression else 'no'} |")
    for d in changed:
        out += ["", *_md_one(d)]
    if reg:
        out += ["", "---", "",
                "Not for merging as is.  Pin the package back: add a constraint such as `\"name<X.Y\"` to "
                "`[packages] constraints` in `envs/matrix-<id>.toml` and run `builder lock --matrix <id>`.  "
                "To take the higher floor on purpose, raise `driver-floor` in the spec and propose the change "
                "by hand; this diff will keep naming the regression for the reviewer."]
    elif changed:
        # The weekly refresh force-pushes its branch: a commit pushed there is gone next week.
        out += ["", "---", "",
                "Accept: merge.  Pin a package back **on the base branch**, not on this one (each weekly "
                "refresh rewrites this branch): there, add a constraint such as `\"name<X.Y\"` to "
                "`[packages] constraints` in `envs/matrix-<id>.toml` (`builder spec set <id> packages.constraints "
                "'[\"name<X.Y\"]'`), run `builder lock --matrix <id>` and merge that; the next refresh keeps "
                "the pin (run the lock-refresh workflow by hand to update this pull request now).  Locally: "
                "`builder lock diff --git <base>`."]
    return "\n".join(out) + "\n"


def _md_one(d: LockDiff) -> list[str]:
    p = d.packages
    out = [f"### `{d.label}`", ""]
    if p.changed or p.added or p.removed:
        out += ["| package | old | new |", "|---|---|---|"]
        out += [f"| {c['name']} | {c['old']} | **{c['new']}** |" for c in p.changed]
        out += [f"| {c['name']} (added) | | **{c['version']}** |" for c in p.added]
        out += [f"| {c['name']} (removed) | {c['version']} | |" for c in p.removed]
        out.append("")
    if p.rehashed:
        out += ["> [!WARNING]", "> Same version, other files: a file changed under its name on the index."]
        out += [f"> - {r['name']} {r['version']}: {_cell(_file_line(f))}" for r in p.rehashed for f in r["files"]]
        out.append("")
    out += [f"**CUDA**, judged on {_cell(_host_line(d))}:", "",
            "| package | " + " | ".join(_FIELD_NAMES[k] for k in ("version", *CUDA_FIELDS)) + " |",
            "|---" * (1 + 1 + len(CUDA_FIELDS)) + "|"]
    for c in d.cuda:
        a, b = c["old"] or {}, c["new"] or {}
        out.append(f"| {c['name']} | " + " | ".join(_cell(_arrow(a.get(k), b.get(k), md=True))
                                                   for k in ("version", *CUDA_FIELDS)) + " |")
    out += ["",
            f"Driver floors: native {_arrow(_floor(d, 'old', 'native_min'), _floor(d, 'new', 'native_min'), md=True)}"
                f"; minor-version compatibility "
                f"{_arrow(_floor(d, 'old', 'compat_min'), _floor(d, 'new', 'compat_min'), md=True)}."]
    v = d.to_json()["verdict"]
    out.append(f"Verdict: {_arrow(v['old'], v['new'], md=True)}.")
    fc = finding_changes(d.old_report, d.new_report)
    if fc:
        out += ["", "Findings that changed:"]
        out += [f"- `{f['id']}` {f['old'] or '-'} → {f['new'] or '-'}: {_cell(f['message'])}" for f in fc]
    if d.regression:
        out += ["", "**Regression:**"] + [f"- {_cell(r)}" for r in d.regressions]
    return out

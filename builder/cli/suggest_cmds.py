"""``builder suggest``: the newest torch + vLLM stack this host (or every host of a fleet) runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from builder.cli import options
from builder.cli.app import main
from builder.cli.common import echo, echo_json, escape, exits, progress, project, table
from builder.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    from builder.suggest.model import Outcome, Row, SuggestResult

_MARK = {"pass": "ok", "info": "info", "warn": "WARN", "fail": "FAIL"}


def _cell(o: Outcome) -> str:
    if o.status == "judged":
        return (o.verdict or "?").upper()
    return {"skipped": "skipped", "unresolvable": "no lock", "not-judged": "not judged"}[o.status]


def _ok(o: Outcome) -> str:
    return "yes" if o.accepted else "no" if o.status == "judged" else "-"


def _why(o: Outcome, limit: int = 110) -> str:
    text = o.reason if o.accepted else f"{o.rule}: {o.reason}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _command(ctx: click.Context) -> str:
    """The command line, for the written matrix's comment (the writer, and tomlkit, load only with --write)."""
    from builder.suggest import write as wr

    return wr.command_line(_argv(ctx))


def _row(r: Row, fleet: bool) -> list[str]:
    line = r.line.release if r.line else "-"
    cells = [r.vllm, r.torch or "-", line, r.native_floor or "-"]
    if fleet:
        cells += [_cell(o) + (" ok" if o.accepted else "") for o in r.outcomes]
    else:
        cells += [_cell(r.outcomes[0]), _ok(r.outcomes[0])]
    first_bad = next((o for o in r.outcomes if not o.accepted), r.outcomes[0])
    cells.append(("host " + str(r.outcomes.index(first_bad) + 1) + ": " if fleet and not first_bad.accepted else "")
                 + _why(first_bad))
    return cells


def render(res: SuggestResult) -> str:
    """The human view: hosts, the candidates tried, the answer and its evidence."""
    from builder.suggest import policy as pol

    fleet = len(res.hosts) > 1
    out = []
    for i, h in enumerate(res.hosts):
        out.append(f"host{' ' + str(i + 1) if fleet else ''}: {h.origin}: driver {h.driver or 'unknown'}, GPU cc "
                   f"{', '.join(h.ccs) or 'unknown'}, glibc {h.glibc or 'unknown'}, {h.arch}")
    out.append(f"policy: {res.policy} ({pol.WORDS[res.policy]}); Python {', '.join(res.pythons)}; {res.platform}; "
               f"index {res.index_url} as of {res.exclude_newer} (exclude-newer)")
    out.append("")
    heads = ["vLLM", "torch", "CUDA", "native floor", *([f"host {i + 1}" for i in range(len(res.hosts))]
                                                      if fleet else ["verdict", "accepted"]), "why"]
    out.append(table([_row(r, fleet) for r in res.rows], heads) if res.rows else "(no candidate)")
    s = res.stats
    tail = {"found": "stopped at the first accepted candidate",
            "bound": f"stopped at --max-candidates {res.max_candidates} (resolved candidates; data skips do not count)",
            "exhausted": "no older release to try"}[res.stopped]
    out.append(f"\n{s.candidates} candidates: {s.skipped} skipped by data, {s.resolved} resolved "
               f"({s.uv_runs} uv runs, {s.kept_resolutions} resolutions and {s.kept_verdicts} verdicts from the "
               f"cache); {tail}" + (f"; {s.not_tried} older releases not tried" if s.not_tried else "")
               + f"; {s.seconds:.1f}s")
    if res.left_out:
        shown = ", ".join(f"{x.version} ({escape(x.why)})" for x in res.left_out[:6])  # the index's yank reason
        more = f" and {len(res.left_out) - 6} more" if len(res.left_out) > 6 else ""
        out.append(f"left out: {shown}{more}")
    if res.unjudged:
        out.append(f"not judged (not in builder's cache; run online once): {', '.join(res.unjudged)}")
    if fleet:
        out.append("")
        for i, a in enumerate(res.answers):
            r = res.rows[a] if a is not None else None
            out.append(f"host {i + 1}: " + (f"vLLM {r.vllm} + torch {r.torch}" if r else "nothing meets the policy"))
    w = res.winner
    out.append("")
    if w is None:
        out.append("answer: none " + ("decided: the cache cannot tell (see 'not judged')" if not res.decided else
                                      "meets the policy" + (" on every host" if fleet else "")
                                      + "; the table says what blocks each candidate"))
        return "\n".join(out)
    who = "every host" if fleet else "this host"
    out.append(f"answer{' (undecided: a newer candidate was not judged)' if not res.decided else ''}: "
               f"vLLM {w.vllm} + torch {w.torch} (CUDA {w.line.label if w.line else '?'}) for {who}")
    for i, o in enumerate(w.outcomes):
        for j in o.judgements:
            out.append(f"  {'host ' + str(i + 1) + ' ' if fleet else ''}py{j.python}: {j.verdict.upper()}, "
                       f"{j.packages} packages, lock {j.lock_hash[:19]}..., native floor {j.native_floor or '-'}"
                       f"{'' if j.native_exact else ' (not exact)'}, compat floor {j.compat_floor or '-'}, "
                       f"declared {j.declared_floor}")
            for f in j.findings:
                if f.level in ("warn", "fail"):
                    out.append(f"    [{_MARK[f.level]:>4}] {f.id}: {escape(f.message)}")  # names from METADATA
    if res.written is not None:
        out.append(f"\nwritten: {res.written}; next: builder lock --matrix {res.written.stem.removeprefix('matrix-')}"
                   f" && builder check --matrix {res.written.stem.removeprefix('matrix-')}")
    else:
        out.append("\nto keep it: add --write ID (envs/matrix-ID.toml), then builder lock --matrix ID")
    return "\n".join(out)


def _argv(ctx: click.Context) -> list[str]:
    """The command's options as given (long names; --json, --force and --cache-dir, which change
    nothing of the answer, left out), for the written spec's comment."""
    out = ["suggest"]
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name in ("as_json", "force", "cache_dir") or p.name is None:
            continue
        value = ctx.params.get(p.name)
        if ctx.get_parameter_source(p.name) is click.core.ParameterSource.DEFAULT:
            continue
        flag = max(p.opts, key=len)
        for v in (list(value or ()) if p.multiple else [value]):
            if p.is_flag:
                if v:
                    out.append(flag)
            elif v is not None:
                out += [flag, str(v)]
    return out


@exits({EXIT_OK: "a stack meets the policy", EXIT_FAILED: "nothing meets the policy (the table says why)",
        EXIT_USAGE: None, EXIT_UNAVAILABLE: "the index or a wheel cannot be read, or --offline and the cache "
        "cannot decide"})
@main.command("suggest")
@options.python("Judge for this Python (repeatable; default: 3.11 and 3.12, every one must pass).",
                multiple=True)
@click.option("--native", is_flag=True, help="Also require the host driver to meet the lock's native floor "
              "(no reliance on minor-version compatibility).")
@click.option("--strict", is_flag=True, help="Require the checker's pass (implies --native).")
@click.option("--vllm", "vllm_spec", help="Only vLLM releases in this PEP 440 range, e.g. '>=0.10,<0.14'.")
@click.option("--torch", "torch_spec", help="Only stacks whose torch is in this range.")
@options.driver("Host NVIDIA driver, e.g. 575.57.08 (default: envs/host.toml).")
@options.gpu_cc()
@click.option("--glibc", help="Host glibc, e.g. 2.35.")
@click.option("--arch", type=click.Choice(["x86_64", "aarch64"]), help="Host architecture (default: the "
              "snapshot's uname -m, else x86_64).")
@click.option("--probe", is_flag=True, help="Read driver and GPUs from this machine's nvidia-smi.")
@options.from_snapshot(multiple=True, help="A host snapshot (`builder host snapshot`); repeat for a fleet: one "
                       "answer per host and the newest stack every host runs.")
@click.option("--exclude-newer", help="Search the index as of this date (YYYY-MM-DD, UTC; default: yesterday).")
@click.option("--max-candidates", type=int, default=8, show_default=True,
              help="Resolve and judge at most this many candidates (skips by data do not count).")
@click.option("--pre", is_flag=True, help="Try vLLM pre-releases too.")
@click.option("--include-yanked", is_flag=True, help="Try yanked vLLM releases too.")
@click.option("--index-url", help="Package index (default: https://pypi.org/simple), as a spec's index.url.")
@click.option("--extra-index-url", "extra_index_urls", multiple=True, help="More indexes (repeatable).")
@options.offline("Answer from builder's cache alone; say what it could not judge.")
@click.option("--deep", is_flag=True, help="Judge vLLM's GPU code by reading its main extension (check --deep).")
@options.cache_dir("builder's cache (default: $BUILDER_CACHE_DIR, else ~/.cache/builder).")
@click.option("--write", "write_id", help="Write the answer as envs/matrix-ID.toml.")
@options.force("With --write: replace an existing envs/matrix-ID.toml.")
@options.as_json("Print one JSON object.")
@click.pass_context
def suggest_cmd(ctx: click.Context, python: tuple[str, ...], native: bool, strict: bool, vllm_spec: str | None,
                torch_spec: str | None, driver: str | None, gpu_cc: tuple[str, ...], glibc: str | None,
                arch: str | None, probe: bool, from_snapshot: tuple[Path, ...], exclude_newer: str | None,
                max_candidates: int, pre: bool, include_yanked: bool, index_url: str | None,
                extra_index_urls: tuple[str, ...], offline: bool, deep: bool, cache_dir: Path | None,
                write_id: str | None, force: bool, as_json: bool) -> None:
    """Find the newest torch + vLLM stack the host runs, by resolving and checking real candidates.

    vLLM releases are tried newest first: a candidate that data already rules out (its torch's
    CUDA line needs a newer driver) is skipped; the others are locked with uv and judged by
    `builder check`, until one meets the policy.
    """
    from builder.spec import PYPI_SIMPLE
    from builder.suggest import policy as pol
    from builder.suggest.search import DEFAULT_PYTHONS, SuggestRequest, run_suggest

    if force and write_id is None:
        from builder.errors import UsageError

        raise UsageError("--force only goes with --write", "pass --write ID --force")
    proj = project(ctx)
    req = SuggestRequest(
        pythons=tuple(p.removeprefix("py") for p in python) or DEFAULT_PYTHONS,
        policy=pol.choose(native=native, strict=strict), vllm=vllm_spec, torch=torch_spec,
        index_url=index_url or PYPI_SIMPLE, extra_index_urls=extra_index_urls, exclude_newer=exclude_newer,
        max_candidates=max_candidates, pre=pre, include_yanked=include_yanked, offline=offline, deep=deep,
        cache_dir=cache_dir, snapshots=from_snapshot, probe=probe, driver=driver, ccs=gpu_cc, glibc=glibc, arch=arch,
        write=write_id, replace=force, command=_command(ctx) if write_id else "")
    res = run_suggest(proj, req, progress(ctx))
    if as_json:
        echo_json(res.as_dict())
    else:
        echo(render(res))
    ctx.exit(res.exit_code)

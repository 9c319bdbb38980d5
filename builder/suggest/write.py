"""``suggest --write ID``: the answer as ``envs/matrix-<id>.toml``, through the spec editor.

The spec holds exactly the candidate's resolution inputs (pins, platform, Pythons,
``exclude-newer``, indexes), so ``builder lock --matrix ID`` runs the uv command the search
ran; its ``driver-floor`` is the floor the policy declared while judging (the native floor
with ``--native``/``--strict``, else the minor-version-compatibility floor, the native floor
named in a comment), so ``builder check --matrix ID`` on that host reports the verdict the
search did.  Comments at the top say how it was chosen: the command, the date, the policy.
"""

from __future__ import annotations

import datetime as dt
import shlex
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from builder import spec_edit
from builder.spec import PYPI_SIMPLE
from builder.suggest import policy as pol
from builder.suggest.model import SKIPPED, SuggestResult


def command_line(argv: list[str]) -> str:
    """The command, as the comment records it (``argv`` after ``builder``)."""
    return " ".join(shlex.quote(a) for a in ["builder", *argv])


def repeatable(command: str, date: str) -> str:
    """``command`` with its search date made explicit, so it repeats."""
    return command if "--exclude-newer" in command else f"{command} --exclude-newer {date}"


def _hosts(result: SuggestResult) -> str:
    out = []
    for h in result.hosts:
        out.append(f"{h.origin} (driver {h.driver or 'unknown'}, GPU cc {', '.join(h.ccs) or 'unknown'}, "
                   f"glibc {h.glibc or 'unknown'}, {h.arch})")
    return "; ".join(out)


def _tried(result: SuggestResult) -> str:
    skipped = Counter(r.outcomes[0].rule for r in result.rows if all(o.status == SKIPPED for o in r.outcomes))
    n = sum(skipped.values())
    rules = ", ".join(f"{rule} x{k}" for rule, k in sorted(skipped.items()))
    return (f"{len(result.rows)} candidates tried: {n} skipped by data" + (f" ({rules})" if rules else "")
            + f", {result.stats.resolved} resolved and judged")


def spec_fields(result: SuggestResult, mid: str, command: str,
                *, today: dt.date | None = None) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(fields, header comment lines, key comments) of the written matrix."""
    w = result.winner
    assert w is not None and w.torch is not None
    js = [j for o in w.outcomes for j in o.judgements]
    declared = js[0].declared_floor
    native, compat = pol.stack_floors([(j.native_floor, j.compat_floor) for j in js])
    line = w.line
    torch_cuda = line.release if line else (js[0].vllm_cuda or "12.0")
    vllm_cuda = js[0].vllm_cuda or torch_cuda
    verdicts = "/".join(sorted({o.verdict.upper() for o in w.outcomes if o.verdict}))
    day = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    header = [
        f"Written by `{repeatable(command, result.exclude_newer)}` on {day} (UTC).",
        f"Chosen: the newest vLLM release on {result.index_url} (files uploaded by the end of "
        f"{result.exclude_newer}, UTC) whose lock builder check judges acceptable under the {result.policy} "
        f"policy ({pol.WORDS[result.policy]}): {verdicts}.",
        f"Host{'s' if len(result.hosts) > 1 else ''}: {_hosts(result)}.",
        f"{_tried(result)}.",
        "`builder lock --matrix " + mid + "` locks exactly what was judged; re-run the command above to search again.",
    ]
    header = [ln for para in header for ln in textwrap.wrap(para, 98, break_long_words=False,
                                                                break_on_hyphens=False, subsequent_indent="  ")]
    fields: dict[str, Any] = {
        "id": mid,
        "title": f"Suggested: vLLM {w.vllm} + torch {w.torch} (CUDA {torch_cuda}), driver >= {declared}",
        "driver-floor": declared,
        "cuda-track": torch_cuda,
        "pythons": list(result.pythons),
        "platform": result.platform,
        "exclude-newer": result.exclude_newer,
        "torch": {"version": w.torch, "cuda": torch_cuda, "source": "pypi"},
        "vllm": {"version": w.vllm, "cuda": vllm_cuda, "source": "pypi"},
    }
    if result.index_url != PYPI_SIMPLE or result.extra_index_urls:
        fields["index"] = {"url": result.index_url}
        if result.extra_index_urls:
            fields["index"]["extra-urls"] = list(result.extra_index_urls)
    note = js[0].native_note
    if result.policy in ("native", "strict"):
        floor_comment = f"the lock's native floor, set by {note}"
    else:
        floor_comment = (f"minor-version compatibility floor of CUDA {line.major if line else '?'}; "
                         f"native floor {native or 'unknown'}" + (f" (set by {note})" if native else f" ({note})"))
        if compat and compat != declared:
            floor_comment += f"; compatibility floor {compat}"
    comments = {"driver-floor": floor_comment,
                "torch.cuda": f"torch {w.torch} pins cudart {line.runtime}" if line else "torch pins no CUDA runtime",
                "vllm.cuda": "the CUDA release vLLM's kernels were built with" if js[0].vllm_cuda
                else "not known: torch's line"}
    return fields, header, comments


def write(project: Any, result: SuggestResult, mid: str, *, command: str, replace: bool = False) -> Path:
    """Write ``envs/matrix-<mid>.toml`` for the answer of ``result``; returns its path."""
    path = Path(project.envs) / f"matrix-{mid}.toml"
    fields, header, comments = spec_fields(result, mid, command)
    text, _matrix = spec_edit.new_matrix_text(fields, path, header=header, comments=comments)
    return spec_edit.create(path, text, project=project, replace=replace)


"""One self-contained HTML page: the matrix (coloured, filterable by family and backend, each
failure expandable with its message and diagnosis), the timing chart (matplotlib, inline SVG)
and the regression diff when a baseline is given. No external resources: it opens anywhere."""
from __future__ import annotations

import html
import io
from typing import Any, Optional

from bnconform.runners.reports.results import RunReport

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3;position:sticky;top:0}
.passed{background:#d8f5d8}.failed,.error{background:#f8c8c8;font-weight:bold}.skipped{background:#eee;color:#777}
.deviates{background:#fde9b6}.xfailed{background:#e3e0f5}.xpassed{background:#f5d0f0}
.filters{margin:1em 0}details{margin:.3em 0}pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
.meta{color:#555;font-size:13px}
"""

SCRIPT = """
function applyFilters(){
  var fam=document.getElementById('family').value, be=document.getElementById('backend').value;
  document.querySelectorAll('#matrix tbody tr').forEach(function(tr){
    tr.style.display=(fam==='*'||tr.dataset.family===fam)?'':'none';});
  document.querySelectorAll('#matrix [data-backend]').forEach(function(c){
    c.style.display=(be==='*'||c.dataset.backend===be)?'':'none';});
  document.querySelectorAll('#failures details').forEach(function(d){
    d.style.display=((fam==='*'||d.dataset.family===fam)&&(be==='*'||d.dataset.backend===be))?'':'none';});
  var shown=document.querySelectorAll('#matrix tbody tr:not([style*="none"])').length;
  document.getElementById('shown').textContent=shown;
}
document.addEventListener('DOMContentLoaded',function(){
  ['family','backend'].forEach(function(id){var s=document.getElementById(id);if(s){s.addEventListener('change',applyFilters);}});
  if(document.getElementById('matrix')){applyFilters();}
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _options(name: str, values: list[str]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return f'<label>{name} <select id="{name}"><option value="*">all</option>{opts}</select></label>'


def matrix_section(report: RunReport) -> str:
    backends, families = report.backend_names(), report.families()
    cells = {(r.spec, r.backend): r for r in report.results}
    specs = list(dict.fromkeys(r.spec for r in report.results))
    family = {r.spec: r.family for r in report.results}
    head = "".join(f'<th data-backend="{_e(b)}">{_e(b)}</th>' for b in backends)
    rows = []
    for spec in specs:
        tds = []
        for b in backends:
            r = cells.get((spec, b))
            outcome = r.outcome if r else ""
            title = _e(r.message.strip().splitlines()[0]) if r and r.message.strip() else ""
            tds.append(f'<td data-backend="{_e(b)}" class="{outcome}" title="{title}">{_e(outcome)}</td>')
        rows.append(f'<tr data-family="{_e(family[spec])}"><td><code>{_e(spec)}</code></td>{"".join(tds)}</tr>')
    failures = []
    for r in report.results:
        if r.outcome in ("failed", "error", "xpassed", "deviates", "xfailed"):
            diag = ", ".join(r.diagnosis) or "none found"
            failures.append(
                f'<details data-family="{_e(r.family)}" data-backend="{_e(r.backend)}"><summary class="{r.outcome}">'
                f"{_e(r.spec)} on {_e(r.backend)}: {_e(r.outcome)} — diagnosis: {_e(diag)}</summary>"
                f"<pre>{_e(r.message.strip())}</pre></details>")
    meta = report.metadata
    counts = " · ".join(f"{_e(b)}: " + ", ".join(f"{n} {o}" for o, n in report.counts(b).items() if n) for b in backends)
    return f"""
<h2>Conformance matrix</h2>
<p class="meta">bnconform {_e(report.suite_version)}, commit {_e(meta.get('git_commit', '?'))}, spec digest
{_e(str(meta.get('spec_digest', '?'))[:16])}, {_e(meta.get('date', '?'))}, {_e(meta.get('cpu_model', ''))};
{len(specs)} cases. {counts}</p>
<div class="filters">{_options('family', families)} {_options('backend', backends)}
 <span>showing <span id="shown">{len(specs)}</span> cases</span></div>
<table id="matrix"><thead><tr><th>case</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>
<h2>Failures, deviations and expected failures</h2>
<div id="failures">{''.join(failures) or '<p>none</p>'}</div>
"""


def timing_chart_svg(table: list[dict[str, Any]]) -> str:
    """Bars per backend of the ratio to torch, one panel per phase, shapes on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(dict.fromkeys(r["phase"] for r in table))
    shapes = list(dict.fromkeys(r["shape"] for r in table))
    backends = [b for b in dict.fromkeys(r["backend"] for r in table)]
    fig, axes = plt.subplots(len(phases), 1, figsize=(10, 3.2 * len(phases)), squeeze=False)
    width = 0.8 / max(len(backends), 1)
    for ax, phase in zip(axes[:, 0], phases):
        lowest = 1.0
        for i, b in enumerate(backends):
            values = []
            for s in shapes:
                cell = next((r for r in table if r["backend"] == b and r["shape"] == s and r["phase"] == phase), None)
                values.append(cell["ratio_to_torch"] if cell and cell.get("ratio_to_torch") else 0.0)
            ax.bar([x + i * width for x in range(len(shapes))], values, width, label=b)
            lowest = min([lowest] + [v for v in values if v > 0])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=lowest * 0.7)  # log bars start at 0: show the shortest whole
        ax.set_title(f"{phase}: time ratio to torch (below 1 is faster)")
        ax.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(shapes))], shapes, fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def timing_section(timing: dict[str, Any]) -> str:
    b = timing.get("bnconform", {})
    meta = b.get("metadata", {})
    targets = "".join(f"<tr><td>{_e(t['target'])}</td><td>{_e(t['status'])}</td><td>{_e(t['evidence'])}</td></tr>"
                      for t in b.get("targets", []))
    copy = b.get("copy_gbs")
    return f"""
<h2>Timing</h2>
<p class="meta">{_e(meta.get('cpu_model', ''))}, {_e(meta.get('threads', '?'))} threads for every backend;
copy bandwidth {f'{copy:.1f} GB/s' if copy else 'not measured'}; commit {_e(meta.get('git_commit', '?'))}.</p>
<figure id="timing-chart">{timing_chart_svg(b.get('table', []))}</figure>
<table><thead><tr><th>target</th><th>status</th><th>evidence</th></tr></thead><tbody>{targets}</tbody></table>
"""


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(
        f'<td class="{_e(r.get(c, ""))}">{_e(", ".join(r[c]) if isinstance(r.get(c), list) else r.get(c, ""))}</td>'
        for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CONFORMANCE_DIFF = [
    ("newly_failing", "Newly failing", ["case", "backend", "base", "new", "new_diagnosis", "message"]),
    ("added_failing", "Added and failing", ["case", "backend", "new", "new_diagnosis", "message"]),
    ("newly_passing", "Newly passing", ["case", "backend", "base", "new"]),
    ("changed_diagnosis", "Changed diagnosis", ["case", "backend", "base_diagnosis", "new_diagnosis"]),
    ("changed", "Other outcome changes", ["case", "backend", "base", "new"]),
    ("added", "Added", ["case", "backend", "new"]),
    ("removed", "Removed", ["case", "backend", "base"]),
]


def diff_section(diff: dict[str, Any]) -> str:
    """The regression diff as tables, each list collapsible (regressions open)."""
    parts = []
    if diff["kind"] == "conformance":
        for key, title, cols in CONFORMANCE_DIFF:
            rows = diff.get(key, [])
            if rows:
                open_ = " open" if key in ("newly_failing", "added_failing") else ""
                parts.append(f"<details{open_}><summary>{_e(title)} ({len(rows)})</summary>{_table(rows, cols)}</details>")
    else:
        rows = [{**r, "ratio": f"{r['ratio']:.2f}", "spread": f"{r['spread']:.0%}",
                 "verdict": "REGRESSION" if r["regression"] else ("jitter" if r["within_noise"] else "")}
                for r in diff["rows"]]
        parts.append(_table(rows, ["backend", "shape", "phase", "ratio", "spread", "verdict"]))
    b, n = diff.get("base", {}), diff.get("new", {})
    return f"""
<h2>Regression diff against the baseline ({_e(diff['kind'])})</h2>
<p class="meta">base {_e(b.get('git_commit', '?'))} ({_e(b.get('date', '?'))}); new {_e(n.get('git_commit', '?'))}
({_e(n.get('date', '?'))})</p>
<p id="regressions"><strong>{diff['regressions']} regression(s)</strong></p>
<div id="diff">{''.join(parts) or '<p>Nothing changed.</p>'}</div>
"""


def page(title: str, conformance: Optional[RunReport] = None, timing: Optional[dict[str, Any]] = None,
         diff: Optional[dict[str, Any]] = None) -> str:
    parts = []
    if diff is not None:
        parts.append(diff_section(diff))
    if conformance is not None:
        parts.append(matrix_section(conformance))
    if timing is not None:
        parts.append(timing_section(timing))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body><h1>{_e(title)}</h1>{''.join(parts)}"
            "</body></html>\n")

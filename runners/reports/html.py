"""One self-contained HTML page: the matrix (coloured; filtered by family, backend and outcome,
searched by case id and message text; each cell a link to its expandable details with message
and diagnosis), each backend's declared conventions and the reasons its cells deviate or are
expected to fail, the failures grouped by cause, the timing chart (matplotlib, inline SVG) and
the regression diff when a baseline is given. No external resources: it opens anywhere."""
from __future__ import annotations

import html
import io
from typing import Any, Optional

from bnconform.cases.deviations import DEVIATIONS
from bnconform.runners.reports.causes import EXPECTED, PROBLEMS, first_line, group, reason
from bnconform.runners.reports.results import OUTCOMES, CaseResult, RunReport

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
.passed{background:#d8f5d8}.failed,.error{background:#f8c8c8;font-weight:bold}.skipped{background:#eee;color:#777}
.deviates{background:#fde9b6}.xfailed{background:#e3e0f5}.xpassed{background:#f5d0f0}
#matrix td a{color:inherit;text-decoration:none;display:block}#matrix td a:hover{text-decoration:underline}
#matrix td.dim{opacity:.35}
.filters{margin:1em 0;position:sticky;top:0;background:#fff;padding:.4em 0;z-index:1}.filters label{margin-right:1em}
details{margin:.3em 0}details:target>summary{outline:2px solid #36c}pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
.meta{color:#555;font-size:13px}ul.reasons{margin:0;padding-left:1.2em}
"""

SCRIPT = """
var TEXT={};
function value(id){var e=document.getElementById(id);return e?e.value:'*';}
function applyFilters(){
  var fam=value('family'), be=value('backend'), out=value('outcome');
  var q=(document.getElementById('search')||{value:''}).value.trim().toLowerCase();
  var target=location.hash.slice(1);
  document.querySelectorAll('#matrix [data-backend]').forEach(function(c){
    c.style.display=(be==='*'||c.dataset.backend===be)?'':'none';});
  var shown=0;
  document.querySelectorAll('#matrix tbody tr').forEach(function(tr){
    var cells=Array.prototype.filter.call(tr.querySelectorAll('td[data-cell]'),function(td){
      return be==='*'||td.dataset.backend===be;});
    var ok=(fam==='*'||tr.dataset.family===fam)
      &&(out==='*'||cells.some(function(td){return td.dataset.outcome===out;}))
      &&(!q||tr.dataset.case.toLowerCase().indexOf(q)>=0
         ||cells.some(function(td){return (TEXT[td.dataset.cell]||'').indexOf(q)>=0;}));
    tr.style.display=ok?'':'none';
    if(ok){shown++;}
    cells.forEach(function(td){td.classList.toggle('dim',out!=='*'&&td.dataset.outcome!==out);});
  });
  document.querySelectorAll('#details details').forEach(function(d){
    var ok=(fam==='*'||d.dataset.family===fam)&&(be==='*'||d.dataset.backend===be)
      &&(out==='*'?d.dataset.outcome!=='passed':d.dataset.outcome===out)
      &&(!q||(TEXT[d.id]||'').indexOf(q)>=0);
    d.style.display=(ok||d.id===target)?'':'none';
  });
  document.getElementById('shown').textContent=shown;
}
function openTarget(){
  var d=location.hash?document.getElementById(location.hash.slice(1)):null;
  if(d&&d.tagName==='DETAILS'){d.open=true;applyFilters();d.scrollIntoView();}
}
document.addEventListener('DOMContentLoaded',function(){
  if(!document.getElementById('matrix')){return;}
  document.querySelectorAll('#details details').forEach(function(d){TEXT[d.id]=d.textContent.toLowerCase();});
  ['family','backend','outcome'].forEach(function(id){document.getElementById(id).addEventListener('change',applyFilters);});
  document.getElementById('search').addEventListener('input',applyFilters);
  window.addEventListener('hashchange',openTarget);
  applyFilters();
  openTarget();
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _options(name: str, values: list[str] | tuple[str, ...]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return f'<label>{name} <select id="{name}"><option value="*">all</option>{opts}</select></label>'


def _reasons(results: list[CaseResult]) -> str:
    """A backend's declared deviations and expected failures: each reason once, with its count."""
    counts: dict[tuple[str, str], int] = {}
    for r in results:
        if r.outcome in EXPECTED:
            key = (r.outcome, reason(r))
            counts[key] = counts.get(key, 0) + 1
    items = "".join(f'<li><span class="{o}">{_e(o)}</span> ({n}): {_e(why)}</li>' for (o, why), n in counts.items())
    return f'<ul class="reasons">{items}</ul>' if items else "none"


def backends_section(report: RunReport) -> str:
    """What each backend is and declares, and the reasons its cells deviate or are expected to fail."""
    rows = []
    for name in report.backend_names():
        info = next((b for b in report.backends if b.name == name), None)
        results = [r for r in report.results if r.backend == name]
        rows.append(
            f"<tr data-name=\"{_e(name)}\"><td><b>{_e(name)}</b></td><td>{_e(info.version if info else '?')}"
            f"{f' (unavailable: {_e(info.unavailable)})' if info and info.unavailable else ''}</td>"
            f"<td>{_e(info.conventions) if info and info.conventions else 'PyTorch’s'}</td>"
            f"<td>{_e(info.manifest) if info and info.manifest else ''}</td><td>{_reasons(results)}</td></tr>")
    return ('<h2>Backends</h2><table id="backends"><thead><tr><th>backend</th><th>version</th><th>declared conventions'
            '</th><th>shipped manifest</th><th>deviations and expected failures (reason: cells)</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def causes_section(report: RunReport) -> str:
    problems = group(report.results, PROBLEMS)
    if not problems:
        return ""
    position = {id(r): i for i, r in enumerate(report.results)}
    rows = "".join(
        f"<tr><td>{_e(c.title)}</td><td>{_e('; '.join(DEVIATIONS.get(d, '') for d in c.diagnosis) or 'undiagnosed')}"
        f"</td><td>{_e(', '.join(c.backends()))}</td><td>{len(c.results)}</td>"
        f'<td><a href="#cell-{position[id(c.results[0])]}">example</a></td></tr>' for c in problems)
    return ('<h2>Failures by cause</h2><table id="causes"><thead><tr><th>cause</th><th>meaning</th><th>backends</th>'
            f"<th>cells</th><th></th></tr></thead><tbody>{rows}</tbody></table>")


def _detail(index: int, r: CaseResult) -> str:
    diag = ", ".join(r.diagnosis) or "none found"
    facts = ", ".join(x for x in (r.tolerance, f"{r.duration:.3f} s") if x)
    return (f'<details id="cell-{index}" data-family="{_e(r.family)}" data-backend="{_e(r.backend)}" '
            f'data-outcome="{_e(r.outcome)}"><summary class="{_e(r.outcome)}">{_e(r.spec)} on {_e(r.backend)}: '
            f"{_e(r.outcome)} — diagnosis: {_e(diag)}</summary><p class=\"meta\">{_e(facts)}</p>"
            f"<pre>{_e(r.message.strip() or '(no message)')}</pre></details>")


def matrix_section(report: RunReport) -> str:
    backends, families = report.backend_names(), report.families()
    index = {(r.spec, r.backend): i for i, r in enumerate(report.results)}
    specs = list(dict.fromkeys(r.spec for r in report.results))
    family = {r.spec: r.family for r in report.results}
    head = "".join(f'<th data-backend="{_e(b)}">{_e(b)}</th>' for b in backends)
    rows = []
    for spec in specs:
        tds = []
        for b in backends:
            i = index.get((spec, b))
            if i is None:
                tds.append(f'<td data-backend="{_e(b)}"></td>')
                continue
            r = report.results[i]
            title = _e(first_line(r.message))
            tds.append(f'<td data-backend="{_e(b)}" data-cell="cell-{i}" data-outcome="{_e(r.outcome)}" '
                       f'class="{_e(r.outcome)}" title="{title}"><a href="#cell-{i}">{_e(r.outcome)}</a></td>')
        rows.append(f'<tr data-family="{_e(family[spec])}" data-case="{_e(spec)}"><td><code>{_e(spec)}</code></td>'
                    f'{"".join(tds)}</tr>')
    details = "".join(_detail(i, r) for i, r in enumerate(report.results))
    meta = report.metadata
    counts = " · ".join(f"{_e(b)}: " + ", ".join(f"{n} {o}" for o, n in report.counts(b).items() if n) for b in backends)
    interrupted = "<p><strong>The run was interrupted: cells not run read error.</strong></p>" if report.interrupted else ""
    return f"""
<h2>Conformance matrix</h2>
<p class="meta">bnconform {_e(report.suite_version)}, commit {_e(meta.get('git_commit', '?'))}, spec digest
{_e(str(meta.get('spec_digest', '?'))[:16])}, {_e(meta.get('date', '?'))}, {_e(meta.get('cpu_model', ''))};
{len(specs)} cases. {counts}</p>{interrupted}
{backends_section(report)}
{causes_section(report)}
<div class="filters">{_options('family', families)} {_options('backend', backends)} {_options('outcome', OUTCOMES)}
 <label>search <input id="search" type="search" placeholder="case id or message text" size="32"></label>
 <span>showing <span id="shown">{len(specs)}</span> of {len(specs)} cases</span></div>
<table id="matrix"><thead><tr><th>case</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>
<h2>Cell details</h2>
<p class="meta">Every cell that did not pass, with its message and diagnosis; a click on a matrix cell opens its
details (a passed cell's too). The filters above apply here as well.</p>
<div id="details">{details}</div>
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

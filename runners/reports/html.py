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
figure svg{max-width:100%;height:auto}.busy{color:#a00}
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
    """Bars per backend of the kernel time ratio to torch with its 95% interval, one panel per
    phase, shapes on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(dict.fromkeys(r["phase"] for r in table))
    shapes = list(dict.fromkeys(r["shape"] for r in table))
    backends = [b for b in dict.fromkeys(r["backend"] for r in table) if b != "torch"]
    fig, axes = plt.subplots(max(len(phases), 1), 1, figsize=(10, 3.2 * max(len(phases), 1)), squeeze=False)
    width = 0.8 / max(len(backends), 1)
    for ax, phase in zip(axes[:, 0], phases):
        lowest, highest = 1.0, 1.0
        for i, b in enumerate(backends):
            xs: list[float] = []
            values: list[float] = []
            errs: list[list[float]] = [[], []]
            for j, s in enumerate(shapes):
                cell = next((r for r in table if r["backend"] == b and r["shape"] == s and r["phase"] == phase), None)
                k = (cell or {}).get("kernel") or {}
                if "ratio_to_torch" in k:
                    xs.append(j + i * width)
                    values.append(k["ratio_to_torch"])
                    errs[0].append(k["ratio_to_torch"] - k["interval"][0])
                    errs[1].append(k["interval"][1] - k["ratio_to_torch"])
            ax.bar(xs, values, width, yerr=errs, capsize=2, label=b)
            lowest = min([lowest] + [v for v in values if v > 0])
            highest = max([highest] + values)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylim(lowest * 0.7, highest * 1.5)  # log bars start at 0: show the shortest whole
        ax.set_title(f"{phase}: kernel time ratio to torch, 95% interval (below 1 is faster)")
        ax.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(shapes))], shapes, fontsize=8)
        if backends:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _svg(fig)


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def sweep_charts_svg(points: dict[str, list[dict[str, Any]]], roof: dict[str, Any]) -> str:
    """--sweep: per phase, time and GB/s against tensor size (log-log) with the roofline drawn in;
    then time against the thread count. Empty when no sweep ran."""
    if not points.get("sizes") and not points.get("threads"):
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(dict.fromkeys(p["phase"] for p in points["sizes"] + points["threads"]))
    fig, axes = plt.subplots(len(phases), 3, figsize=(13, 3.6 * len(phases)), squeeze=False)
    cache = roof.get("cache_bytes")
    for row, phase in zip(axes, phases):
        sizes = [p for p in points["sizes"] if p["phase"] == phase]
        for backend in dict.fromkeys(p["backend"] for p in sizes):
            mine = [p for p in sizes if p["backend"] == backend]
            row[0].plot([p["bytes"] for p in mine], [p["median_s"] * 1e3 for p in mine], marker="o", label=backend)
            row[1].plot([p["bytes"] for p in mine], [p["gbs"] for p in mine], marker="o", label=backend)
        bound = sorted({(p["bytes"], p["bound_s"], p["gbs"] * p["median_s"] / p["bound_s"])
                        for p in sizes if p["bound_s"]})
        if bound:
            row[0].plot([b[0] for b in bound], [b[1] * 1e3 for b in bound], "k--", label="roofline")
            row[1].plot([b[0] for b in bound], [b[2] for b in bound], "k--", label="roofline")
        for ax, title, unit in ((row[0], "time per call", "ms"), (row[1], "effective bandwidth", "GB/s")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            if cache:
                ax.axvline(cache, color="grey", linewidth=0.8, linestyle=":")
            ax.set_title(f"{phase}: {title} against x's size", fontsize=9)
            ax.set_xlabel("bytes of x (dotted: last-level cache)", fontsize=8)
            ax.set_ylabel(unit, fontsize=8)
            ax.legend(fontsize=7)
        threads = [p for p in points["threads"] if p["phase"] == phase]
        for backend in dict.fromkeys(p["backend"] for p in threads):
            mine = [p for p in threads if p["backend"] == backend]
            row[2].plot([p["threads"] for p in mine], [p["median_s"] * 1e3 for p in mine], marker="o", label=backend)
        row[2].set_title(f"{phase}: time against threads" + (f" ({threads[0]['shape']})" if threads else ""), fontsize=9)
        row[2].set_xlabel("threads", fontsize=8)
        row[2].set_ylabel("ms", fontsize=8)
        if threads:
            row[2].set_xticks(sorted({p["threads"] for p in threads}))
            row[2].legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def _load(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "?"


def timing_section(timing: dict[str, Any]) -> str:
    from bnconform.runners.reports.timing import CELL_HEADERS

    b = timing.get("bnconform", {})
    meta = b.get("metadata", {})
    mach = meta.get("machine", {})
    roof = b.get("roofline") or {}
    pct = lambda v: "" if v is None else f"{v:.0f}%"
    verdicts = "".join(
        f"<tr><td>{_e(v['backend'])}</td><td>{v['cells']}</td><td>{v['faster']}</td><td>{v['no clear difference']}</td>"
        f"<td>{v['slower']}</td><td>{pct(v['roofline_median_pct'])}</td><td>{pct(v['roofline_min_pct'])}</td></tr>"
        for v in b.get("verdicts", []))
    busy = (f'<p class="busy"><strong>The machine was busy (load above its {_e(mach.get("cpu_count"))} CPUs): these '
            "figures are unreliable.</strong></p>") if mach.get("busy") else ""
    roofline = (", ".join(f"{k} {v['gbs']:.1f} GB/s" for k, v in roof["kernels"].items()) + f" ({roof['isa']})"
                if roof.get("kernels") else meta.get("roofline_unavailable", "not measured"))
    charts = sweep_charts_svg(b.get("sweep") or {}, roof)
    sweep = f'<h3>Cost curves (--sweep)</h3><figure id="sweep-chart">{charts}</figure>' if charts else ""
    return f"""
<h2>Timing</h2>
<p class="meta">{_e(meta.get('cpu_model', ''))}, {_e(mach.get('cpu_count', '?'))} CPUs, {_e(meta.get('threads', '?'))}
threads for every backend; load {_e(_load(mach.get('load_before')))} before, {_e(_load(mach.get('load_after')))} after;
roofline {_e(roofline)}; commit {_e(meta.get('git_commit', '?'))}.</p>
{busy}
<figure id="timing-chart">{timing_chart_svg(b.get('table', []))}</figure>
{sweep}
<table><thead><tr><th>backend</th><th>cells</th><th>faster</th><th>no clear difference</th><th>slower</th>
<th>median % of bound</th><th>lowest % of bound</th></tr></thead><tbody>{verdicts}</tbody></table>
<h3>Every cell: kernel against kernel, and as called</h3>
<div id="timing-cells">{_table(_cell_rows(b.get('table', [])), ["phase", *CELL_HEADERS])}</div>
"""


def _cell_rows(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """timing.md's per-cell columns, for the page."""
    from bnconform.runners.reports.timing import CELL_HEADERS, cell_values

    return [{"phase": r["phase"], **dict(zip(CELL_HEADERS, cell_values(r)))} for r in table]


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
        rows = [{**r, "ratio": f"{r['ratio']:.2f} [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]",
                 "verdict": "REGRESSION" if r["regression"] else ("improvement" if r["improvement"] else
                                                                  ("no clear change" if r["no_clear_change"] else ""))}
                for r in diff["rows"]]
        parts.append(_table(rows, ["backend", "shape", "phase", "mode", "ratio", "verdict"]))
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

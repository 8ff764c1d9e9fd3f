"""reports/*.md and reports/figures/* -> one self-contained results page, reports/index.html.

Every markdown report becomes a section (its provenance footer kept verbatim), `reports/claims.md` the
"Claims ledger" up front, every figure is embedded as a data URI (a same-named figure in another format is
linked), tables sort on a header click (a few lines of inline JavaScript), and a table of contents and a
list of sources (size, SHA-256) close the page. Nothing is loaded from outside the file (a Content Security
Policy forbids it) and nothing depends on the clock or the file system's order: the same reports give the
same bytes. `nndiff site` writes it; the Snakemake rule `site` (benchmarks/rules/site.smk) builds it.
"""
from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

CLAIMS = "claims"
FIRST = (CLAIMS, "table1", "zoo", "variants")  # then alphabetical
FIGURE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".webp": "image/webp", ".gif": "image/gif"}  # in order of preference within a stem
SCREENSHOT = "index-screenshot"  # a picture of this page: never part of it
TITLE = "nndiff-bench results"
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def section_id(stem: str) -> str:
    return "claims-ledger" if stem == CLAIMS else f"r-{_slug(stem)}"


def _order(path: Path) -> tuple:
    return (FIRST.index(path.stem) if path.stem in FIRST else len(FIRST), path.name)


def find_reports(reports_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(reports_dir).glob("*.md"), key=_order)


def find_figures(reports_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Figure files under reports/figures, grouped by name without suffix, preferred format first."""
    groups: dict[str, list[Path]] = {}
    root = Path(reports_dir) / "figures"
    for p in sorted(root.rglob("*")) if root.is_dir() else []:
        if p.is_file() and p.suffix.lower() in FIGURE_TYPES and p.stem != SCREENSHOT:
            groups.setdefault(p.relative_to(root).with_suffix("").as_posix(), []).append(p)
    order = list(FIGURE_TYPES)
    return {k: sorted(v, key=lambda p: (order.index(p.suffix.lower()), p.name)) for k, v in sorted(groups.items())}


def rule_inputs(built, reports_dir: str | os.PathLike = "reports") -> dict[str, list[str]]:
    """The Snakemake rule's inputs: the markdown reports among `built` (rule all's inputs) plus any other
    reports_dir/*.md already there (hand-made ones), and the figure files present now."""
    root = Path(reports_dir)
    md = {str(f) for f in built if str(f).endswith(".md") and Path(f).parent == root}
    md |= {str(p) for p in root.glob("*.md")}
    figures = [str(p) for files in find_figures(root).values() for p in files]
    return {"reports": sorted(md), "figures": sorted(figures)}


def data_uri(path: Path) -> str:
    mime = FIGURE_TYPES[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


@dataclass
class Section:
    path: Path
    id: str
    title: str
    body: str  # HTML
    headings: list[tuple[int, str, str]] = field(default_factory=list)  # (level, id, text) below the title
    figures: list[Path] = field(default_factory=list)  # embedded inline


def _text(el: ET.Element) -> str:
    return re.sub(r"\x02.*?\x03", "", "".join(el.itertext())).strip()


def render_report(path: Path, reports_dir: Path) -> Section:
    """One markdown report -> HTML: headings one level down with ids, tables sortable and scrollable,
    images embedded. Raises ValueError for an external or missing image."""
    import markdown
    from markdown.extensions import Extension
    from markdown.treeprocessors import Treeprocessor

    sid = section_id(path.stem)
    sec = Section(path=path, id=sid, title="", body="")

    class Page(Treeprocessor):
        def run(self, root):
            n = 0
            for el in root.iter():
                if el.tag in _HEADINGS:
                    level = int(el.tag[1])
                    text = _text(el)
                    if level == 1 and not sec.title:
                        sec.title = text
                    else:
                        n += 1
                        el.set("id", f"{sid}-{n}")
                        sec.headings.append((level, f"{sid}-{n}", text))
                    el.tag = f"h{min(level + 1, 6)}"
                elif el.tag == "table":
                    el.set("class", "sortable")
                elif el.tag == "img":
                    self.embed(el)
            tables = [(parent, child) for parent in root.iter() for child in parent if child.tag == "table"]
            for parent, table in tables:  # collected first: the new wrappers are not walked again
                i = list(parent).index(table)
                wrap = ET.Element("div", {"class": "table-wrap"})
                wrap.tail, table.tail = table.tail, None
                parent.remove(table)
                wrap.append(table)
                parent.insert(i, wrap)

        def embed(self, el):
            src = el.get("src", "")
            if src.startswith("data:"):
                return
            if _EXTERNAL.match(src):
                raise ValueError(f"{path}: image {src!r} is not a local file; the page loads nothing from outside")
            file = (path.parent / src).resolve()
            if not file.is_file() or file.suffix.lower() not in FIGURE_TYPES:
                raise ValueError(f"{path}: image {src!r} not found (looked for {file})")
            el.set("src", data_uri(file))
            el.set("data-figure", os.path.relpath(file, reports_dir.resolve()).replace(os.sep, "/"))
            el.set("loading", "eager")
            sec.figures.append(file)

    class PageExtension(Extension):
        def extendMarkdown(self, md):
            md.treeprocessors.register(Page(md), "nndiff-page", 1)  # after inline processing (priority 20)

    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists", PageExtension()],
                           output_format="html")
    sec.body = md.convert(path.read_text(encoding="utf-8"))
    if not sec.title:
        sec.title = "Claims ledger" if path.stem == CLAIMS else path.stem
        sec.body = f"<h2>{html.escape(sec.title)}</h2>\n{sec.body}"
    return sec


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _rel(path: Path, reports_dir: Path) -> str:
    return os.path.relpath(path.resolve(), reports_dir.resolve()).replace(os.sep, "/")


def _href(rel: str) -> str:
    return html.escape(quote(rel), quote=True)


def build_page(reports: list[Path] | None = None, reports_dir: str | os.PathLike = "reports") -> str:
    """The page as a string. `reports`: markdown files (default: reports_dir/*.md); figures: reports_dir/figures."""
    import markdown

    reports_dir = Path(reports_dir)
    paths = sorted({Path(p) for p in reports} if reports is not None else find_reports(reports_dir), key=_order)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"reports not found: {', '.join(missing)}")
    if not paths:
        raise ValueError(f"no markdown reports in {reports_dir}")
    sections = [render_report(p, reports_dir) for p in paths]
    figures = find_figures(reports_dir)
    inline = {f.resolve() for s in sections for f in s.figures}
    shown_in = {f.resolve(): s for s in sections for f in s.figures}

    toc, body = [], []
    for s in sections:
        label = f"Claims ledger: {s.title}" if s.path.stem == CLAIMS and "claim" not in s.title.lower() else s.title
        subs = "".join(f'<li><a href="#{h_id}">{html.escape(t)}</a></li>' for lvl, h_id, t in s.headings if lvl <= 2)
        toc.append(f'<li><a href="#{s.id}">{html.escape(label)}</a> <span class="file">{html.escape(s.path.name)}'
                   "</span>" + (f"<ol>{subs}</ol>" if subs else "") + "</li>")
        rel = _rel(s.path, reports_dir)
        links = [f'<a href="{_href(rel)}">{html.escape(rel)}</a>']
        csv = s.path.with_suffix(".csv")
        if csv.is_file():
            links.append(f'<a href="{_href(_rel(csv, reports_dir))}">{html.escape(_rel(csv, reports_dir))}</a>')
        cls = "report claims" if s.path.stem == CLAIMS else "report"
        body.append(f'<section id="{s.id}" class="{cls}" data-source="{html.escape(rel)}">\n'
                    f'<p class="source">source: {" · ".join(links)}</p>\n{s.body}\n</section>')

    if figures:
        toc.append('<li><a href="#figures">Figures</a></li>')
        items = []
        for stem, files in figures.items():
            main, others = files[0], files[1:]
            rel = _rel(main, reports_dir)
            also = "".join(f' · <a href="{_href(_rel(o, reports_dir))}">{html.escape(_rel(o, reports_dir))}</a>'
                           for o in others)
            shown = next((f for f in files if f.resolve() in inline), None)
            if shown is not None:
                s = shown_in[shown.resolve()]
                items.append(f'<li id="fig-{_slug(stem)}"><a href="{_href(rel)}">{html.escape(rel)}</a>{also}: '
                             f'shown in <a href="#{s.id}">{html.escape(s.title)}</a></li>')
            else:
                items.append(f'<li id="fig-{_slug(stem)}"><figure><img src="{data_uri(main)}" '
                             f'alt="{html.escape(stem)}" data-figure="{html.escape(rel)}" loading="eager">'
                             f'<figcaption><a href="{_href(rel)}">{html.escape(rel)}</a>{also}</figcaption>'
                             f'</figure></li>')
        body.append('<section id="figures" class="figures">\n<h2>Figures</h2>\n'
                    '<p>Every file under <code>reports/figures/</code>; one format per figure is embedded, the '
                    'others are linked.</p>\n<ul class="gallery">\n' + "\n".join(items) + "\n</ul>\n</section>")

    toc.append('<li><a href="#sources">Sources and provenance</a></li>')
    rows = [(p, "report") for p in paths] + [(f, "figure") for files in figures.values() for f in files]
    trs = "\n".join(f"<tr><td><code>{html.escape(_rel(p, reports_dir))}</code></td><td>{kind}</td>"
                    f"<td>{p.stat().st_size}</td><td><code>{_sha(p)}</code></td></tr>" for p, kind in rows)
    body.append(
        '<section id="sources" class="sources">\n<h2>Sources and provenance</h2>\n'
        "<p>Each report's own footer, kept verbatim above, states the profile and config hash, the seed, the "
        "commit and the hardware it was measured with. This page adds no timestamp: the same reports give the "
        f"same bytes. Built by <code>nndiff site</code> (Python-Markdown {html.escape(markdown.__version__)}) "
        "from these files:</p>\n"
        '<div class="table-wrap"><table class="sortable">\n<thead><tr><th>file</th><th>kind</th><th>bytes</th>'
        f"<th>SHA-256 (first 12)</th></tr></thead>\n<tbody>\n{trs}\n</tbody></table></div>\n</section>")

    n_fig = sum(len(v) for v in figures.values())
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{TITLE}</title>",
        '<link rel="icon" href="data:,">',
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f'<header><h1>{TITLE}</h1><p>{len(paths)} reports and {n_fig} figure files from <code>reports/</code>, '
        "in one file that loads nothing from outside. Click a column header to sort a table (again to "
        "reverse).</p></header>",
        '<nav id="toc"><h2>Contents</h2><ol>' + "".join(toc) + "</ol></nav>",
        "<main>",
        *body,
        "</main>",
        f"<script>{JS}</script>",
        "</body>",
        "</html>",
        "",
    ])


def write_page(out: str | os.PathLike, reports: list[str | os.PathLike] | None = None,
               reports_dir: str | os.PathLike | None = None) -> Path:
    """Build the page and write it atomically (default reports_dir: the folder of `out`)."""
    out = Path(out)
    reports_dir = Path(reports_dir) if reports_dir is not None else out.parent
    page = build_page([Path(p) for p in reports] if reports else None, reports_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(page.encode("utf-8"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


CSS = """
:root{--fg:#1d2125;--muted:#5c6670;--line:#d5dbe1;--head:#eef2f6;--accent:#1f5fa8;--claims:#fff8e6}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:#fff;display:grid;grid-template-columns:300px minmax(0,1fr);grid-template-areas:"head head" "toc main"}
header{grid-area:head;border-bottom:1px solid var(--line);padding:0 20px 8px}
header h1{margin:14px 0 2px;font-size:24px}
header p{margin:0;color:var(--muted);font-size:14px}
nav{grid-area:toc;position:sticky;top:0;align-self:start;max-height:100vh;overflow-y:auto;padding:10px 12px 20px 20px;
font-size:13px;border-right:1px solid var(--line)}
nav h2{font-size:15px;margin:0 0 4px}
nav ol{margin:0;padding-left:20px}
nav li{margin:2px 0}
nav ol ol{font-size:12px}
nav .file{display:block;font-size:11px;color:var(--muted)}
main{grid-area:main;padding:0 24px 40px;min-width:0}
@media (max-width:900px){body{display:block}nav{position:static;max-height:none;border-right:0}}
a{color:var(--accent)}
section{border-top:2px solid var(--line);margin-top:22px;padding-top:4px}
main>section:first-child{border-top:0;margin-top:6px}
section.claims{background:var(--claims);border:1px solid #e8d9a8;padding:4px 14px 10px}
section h2{font-size:21px;margin:10px 0 8px}
section h3{font-size:17px}
.source{font-size:12px;color:var(--muted);margin:6px 0 0}
code{font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#f3f5f7;padding:0 3px;border-radius:3px}
pre{background:#f3f5f7;padding:8px;overflow-x:auto}
.table-wrap{overflow-x:auto;margin:8px 0 14px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 7px;white-space:nowrap}
thead th{background:var(--head)}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{background:#dde6ef}
table.sortable th::after{content:"\\2195";color:#9aa5b1;margin-left:4px;font-size:11px}
table.sortable th[aria-sort=ascending]::after{content:"\\25B2";color:var(--fg)}
table.sortable th[aria-sort=descending]::after{content:"\\25BC";color:var(--fg)}
tbody tr:nth-child(even){background:#fafbfc}
img{max-width:100%;height:auto}
ul.gallery{list-style:none;padding:0}
figure{margin:10px 0}
figcaption{font-size:12px;color:var(--muted)}
"""

# Click (or Enter on) a header: sort that column ascending, again: descending. A cell's key is its leading
# number ("55.21 ± 3.83 (n=60)" -> 55.21, "−0.02" -> -0.02); numbers come before text and empty cells or
# dashes last in either direction; ties keep the report's order.
JS = r"""
(function () {
  "use strict";
  function key(cell) {
    var t = cell.textContent.replace(/\u2212/g, "-").trim();
    if (t === "" || /^[\u2013\u2014-]$/.test(t)) return {kind: 2, v: 0};
    var m = t.replace(/,/g, "").match(/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?/i);
    if (m) return {kind: 0, v: parseFloat(m[0])};
    return {kind: 1, v: t.toLowerCase()};
  }
  function compare(a, b) {
    if (a.kind !== b.kind) return a.kind - b.kind;
    if (a.kind === 0) return a.v - b.v;
    if (a.kind === 1) return a.v.localeCompare(b.v, undefined, {numeric: true});
    return 0;
  }
  function sortBy(table, col, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var sign = dir === "ascending" ? 1 : -1;
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows).map(function (r, i) {
      var cell = r.cells[col];
      return {row: r, i: i, k: cell ? key(cell) : {kind: 2, v: 0}};
    });
    rows.sort(function (a, b) {
      if (a.k.kind !== b.k.kind) return a.k.kind - b.k.kind;
      return sign * compare(a.k, b.k) || a.i - b.i;
    });
    rows.forEach(function (r) { tbody.appendChild(r.row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); }
      });
    });
  });
})();
"""

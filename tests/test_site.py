"""The results page (benchmarks/site.py): built from the committed reports/ (every report a section, every
table and figure in it, nothing external, same bytes twice), the Snakemake rule, and (marker `browser`) the
page in real headless Chromium: it loads without console errors, tables and figures render, headers sort."""
from __future__ import annotations

import re
import shutil
import struct
import time
import zlib
from html import unescape
from pathlib import Path

import pytest

from benchmarks import browser as chromium
from benchmarks.site import SCREENSHOT, build_page, find_figures, find_reports, rule_inputs, section_id, write_page

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports" / "published"  # the committed, published reports
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")  # a pipe table's |---|---| line


def n_tables(md: str) -> int:
    lines = md.splitlines()
    return sum(1 for i, line in enumerate(lines)
               if i and TABLE_RULE.match(line) and lines[i - 1].lstrip().startswith("|"))


def sections(page: str) -> dict[str, str]:
    """data-source -> the section's HTML."""
    found = re.findall(r'<section id="[^"]+" class="report[^"]*" data-source="([^"]+)">(.*?)</section>', page, re.S)
    return dict(found)


def png(width: int, height: int, rgb=(200, 40, 40)) -> bytes:
    """A plain-colour PNG, standard library only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60" viewBox="0 0 120 60">'
       '<rect width="120" height="60" fill="#3060c0"/></svg>')
MIXED = ["10.50 ± 1.00 (n=60)", "\u22122.00", "\u2013", "3", "n/a", "+0.50 ± 3.1"]  # − and – as the reports write


@pytest.fixture()
def toy(tmp_path) -> Path:
    """A reports folder with a claims ledger, a table of mixed cells, an inline figure and loose figures."""
    d = tmp_path / "reports"
    (d / "figures").mkdir(parents=True)
    (d / "figures" / "inline.png").write_bytes(png(40, 20))
    (d / "figures" / "loose.png").write_bytes(png(30, 30, (20, 160, 60)))
    (d / "figures" / "loose.svg").write_text(SVG)
    (d / "figures" / "vector.svg").write_text(SVG)
    (d / "figures" / f"{SCREENSHOT}.png").write_bytes(png(10, 10))  # a picture of the page: left out
    rows = "\n".join(f"| m{i} | {v} |" for i, v in enumerate(MIXED))
    (d / "alpha.md").write_text(f"# Alpha report\n\nSome text.\n\n| method | value |\n|:--|--:|\n{rows}\n\n"
                                "![inline figure](figures/inline.png)\n\n## Provenance\n\nCommit `abc1234`.\n")
    (d / "claims.md").write_text("# Claims\n\n| claim | verdict |\n|---|---|\n| T1 | holds |\n| T2 | fails |\n")
    (d / "table1.md").write_text("# Table 1\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    return d


# ----------------------------------------------------------------------------- the committed reports

def test_committed_reports_each_a_section_with_all_tables_and_figures(tmp_path):
    out = write_page(tmp_path / "index.html", reports_dir=REPORTS)
    page = out.read_text(encoding="utf-8")
    secs = sections(page)
    reports = find_reports(REPORTS)
    assert reports and set(secs) == {p.name for p in reports}
    for p in reports:
        md = p.read_text(encoding="utf-8")
        html = secs[p.name]
        assert f'id="{section_id(p.stem)}"' in page and f'href="#{section_id(p.stem)}"' in page  # section + TOC
        assert html.count('<table class="sortable">') == n_tables(md), p.name
        title = next((ln[2:].strip() for ln in md.splitlines() if ln.startswith("# ")), None)
        if title:  # the report's title is the section's heading
            heading = re.search(r"<h2>(.*?)</h2>", html, re.S).group(1)
            plain = lambda t: re.sub(r"[`*_]", "", t)  # noqa: E731
            assert plain(unescape(re.sub(r"<[^>]+>", "", heading))) == plain(title), p.name
        footer = [ln for ln in md.splitlines() if ln.startswith(("Commit `", "Profile `", "- commit:"))]
        for ln in footer:  # the provenance footer survives (its commit hash at least)
            assert re.search(r"`([0-9a-f]{7,})`", ln).group(1) in html, p.name
    for files in find_figures(REPORTS).values():
        for f in files:
            rel = f.relative_to(REPORTS).as_posix()
            assert f'data-figure="{rel}"' in page or f'href="{rel}"' in page, rel
    if (REPORTS / "claims.md").exists():
        assert 'id="claims-ledger"' in page and page.index('id="claims-ledger"') < page.index('id="r-table1"')
    assert "http://" not in page and "https://" not in page
    for attr in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:", "#")) or not re.match(r"^([a-z][a-z0-9+.-]*:|//)", attr, re.I), attr
    assert 'id="sources"' in page and "<script>" in page


def test_page_is_byte_reproducible(tmp_path):
    a = build_page(reports_dir=REPORTS)
    copy = tmp_path / "elsewhere" / "reports"
    shutil.copytree(REPORTS, copy)
    for p in sorted(copy.rglob("*"), reverse=True):  # other mtimes, other order on disk
        p.touch()
    assert build_page(reports_dir=copy) == a
    assert "<time" not in a and not re.search(r"20\d\d-\d\d-\d\dT", a)


# ----------------------------------------------------------------------------- a toy reports folder

def test_figures_embedded_once_alternates_linked_screenshot_left_out(toy):
    page = build_page(reports_dir=toy)
    assert page.index('id="claims-ledger"') < page.index('id="r-table1"') < page.index('id="r-alpha"')
    assert 'data-figure="figures/inline.png"' in page and "shown in" in page   # inline, not again in the gallery
    assert page.count('data-figure="figures/inline.png"') == 1
    assert 'data-figure="figures/loose.png"' in page and 'href="figures/loose.svg"' in page
    assert 'data-figure="figures/vector.svg"' in page and "data:image/svg+xml;base64," in page
    assert SCREENSHOT not in page
    assert 'id="r-alpha-1">Provenance' in page and "Commit <code>abc1234</code>" in page


def test_bad_images_fail_naming_the_report(toy):
    (toy / "beta.md").write_text("# Beta\n\n![x](figures/missing.png)\n")
    with pytest.raises(ValueError, match="beta.md.*missing.png"):
        build_page(reports_dir=toy)
    (toy / "beta.md").write_text("# Beta\n\n![x](https://example.org/x.png)\n")
    with pytest.raises(ValueError, match="not a local file"):
        build_page(reports_dir=toy)


def test_cli_and_rule_inputs(toy, tmp_path):
    from benchmarks.cli import main
    out = tmp_path / "site" / "index.html"
    assert main(["site", str(toy / "table1.md"), "--reports-dir", str(toy), "--out", str(out)]) == 0
    assert sections(out.read_text()).keys() == {"table1.md"}
    assert main(["site", str(toy / "nope.md"), "--reports-dir", str(toy), "--out", str(out)]) == 2
    got = rule_inputs([f"{toy}/zoo.md", f"{toy}/index.html", "data/x.csv"], toy)
    assert got["reports"] == sorted([f"{toy}/zoo.md", *(str(p) for p in toy.glob("*.md"))])
    assert got["figures"] == sorted(str(p) for p in (toy / "figures").iterdir() if SCREENSHOT not in p.name)


def test_rule_all_builds_the_page_from_every_report(tmp_path):
    from tests.test_workflow import SMOKE, snakemake
    out = snakemake("-n", "--cores", "1", "--configfile", str(SMOKE), "--directory", str(tmp_path))
    text = out.stdout + out.stderr
    job = text[text.index("rule site:"):]
    inputs = job[:job.index("\n    output:")]
    for report in ("reports/smoke/table1.md", "reports/smoke/zoo.md", "reports/smoke/variants.md", "reports/smoke/claims.md"):
        assert report in inputs
    assert "reports/smoke/index.html" in job[:job.index("\n    log:")]


# ----------------------------------------------------------------------------- in a real browser

needs_chromium = pytest.mark.skipif(not chromium.available(),
                                    reason=f"no Chromium at {chromium.EXECUTABLE} (Debian: apt-get install chromium)")

ROWS = "Array.from(document.querySelectorAll({sel} + ' tbody tr'), r => r.cells[{col}].textContent.trim())"


@pytest.fixture(scope="module")
def browser():
    with chromium.Chromium(width=1280, height=900) as b:
        yield b


def sort_and_read(browser, sel: str, col: int) -> tuple[str, list[str]]:
    browser.click(f"{sel} thead th", col)
    return (browser.evaluate(f"document.querySelectorAll({sel!r} + ' thead th')[{col}].getAttribute('aria-sort')"),
            browser.evaluate(ROWS.format(sel=repr(sel), col=col)))


@pytest.mark.browser
@needs_chromium
def test_browser_committed_page_loads_renders_and_sorts(browser, tmp_path):
    t0 = time.monotonic()
    page = write_page(tmp_path / "index.html", reports_dir=REPORTS)
    browser.open(page)
    assert browser.errors == []
    assert browser.evaluate("document.title") == "nndiff-bench results"
    expected_tables = sum(n_tables(p.read_text()) for p in find_reports(REPORTS)) + 1  # + the sources table
    state = browser.evaluate("""({
        tables: Array.from(document.querySelectorAll('table.sortable'),
                           t => [t.tBodies[0].rows.length, t.getBoundingClientRect().height]),
        sections: Array.from(document.querySelectorAll('section.report'), s => s.dataset.source),
        images: Array.from(document.images, i => [i.dataset.figure, i.complete, i.naturalWidth,
                                                    i.getBoundingClientRect().width]),
    })""")
    assert len(state["tables"]) == expected_tables
    assert all(rows > 0 and height > 0 for rows, height in state["tables"])
    assert sorted(state["sections"]) == sorted(p.name for p in find_reports(REPORTS))
    figures = {files[0].relative_to(REPORTS).as_posix() for files in find_figures(REPORTS).values()}
    assert {fig for fig, *_ in state["images"]} == figures
    assert all(done and natural > 0 and shown > 0 for _, done, natural, shown in state["images"]), state["images"]

    # a numeric column of a report table that is not in order yet: one click ascending, two descending
    sel, col = browser.evaluate("""(() => {
        const num = s => parseFloat(s.replace(/\\u2212/g, '-'));
        const tables = Array.from(document.querySelectorAll('section.report table.sortable'));
        for (const [ti, t] of tables.entries()) {
            for (let c = 0; c < t.tHead.rows[0].cells.length; c++) {
                const v = Array.from(t.tBodies[0].rows, r => num(r.cells[c].textContent));
                const sorted = v.every((x, i) => i === 0 || v[i - 1] <= x);
                if (v.length > 2 && v.every(x => !isNaN(x)) && !sorted) {
                    t.id = t.id || 'sort-probe-' + ti;
                    return ['#' + t.id, c];
                }
            }
        }
        return [null, null];
    })()""")
    assert sel, "no report table with an unsorted numeric column to click"
    before = browser.evaluate(f"Array.from(document.querySelectorAll('{sel} tbody tr'), r => r.textContent)")
    aria, up = sort_and_read(browser, sel, col)
    nums = [float(v.replace("\u2212", "-").split()[0]) for v in up]
    assert aria == "ascending" and nums == sorted(nums)
    aria, down = sort_and_read(browser, sel, col)
    nums = [float(v.replace("\u2212", "-").split()[0]) for v in down]
    assert aria == "descending" and nums == sorted(nums, reverse=True)
    after = browser.evaluate(f"Array.from(document.querySelectorAll('{sel} tbody tr'), r => r.textContent)")
    assert sorted(after) == sorted(before)  # rows move whole
    shot = browser.screenshot(tmp_path / "shot.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    assert browser.errors == []
    print(f"browser check of the committed page: {time.monotonic() - t0:.1f} s")


@pytest.mark.browser
@needs_chromium
def test_browser_toy_page_figures_and_mixed_sort(browser, toy):
    browser.open(write_page(toy / "index.html"))
    assert browser.errors == []
    images = browser.evaluate("Array.from(document.images, i => [i.dataset.figure, i.naturalWidth, i.naturalHeight])")
    assert sorted(images) == [["figures/inline.png", 40, 20], ["figures/loose.png", 30, 30],
                              ["figures/vector.svg", 120, 60]]
    sel = "#r-alpha table"
    aria, up = sort_and_read(browser, sel, 1)
    assert aria == "ascending" and up == ["\u22122.00", "+0.50 ± 3.1", "3", "10.50 ± 1.00 (n=60)", "n/a", "\u2013"]
    aria, down = sort_and_read(browser, sel, 1)
    assert aria == "descending" and down == ["10.50 ± 1.00 (n=60)", "3", "+0.50 ± 3.1", "\u22122.00", "n/a", "\u2013"]
    aria, names = sort_and_read(browser, sel, 0)  # another column: text, ascending again
    assert aria == "ascending" and names == [f"m{i}" for i in range(len(MIXED))]
    assert browser.evaluate(f"document.querySelectorAll('{sel} thead th')[1].getAttribute('aria-sort')") is None
    browser.evaluate("document.querySelector('#r-alpha-1').scrollIntoView(); 1")
    assert browser.errors == []

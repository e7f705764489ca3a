"""The book as one PDF, offline (``make pdf``; ``make pdf EDITION=student``).

Usage::

    .venv/bin/python tools/pdf.py [--book .] [--edition instructor|student] [--out PDF]

1. Jupyter Book's ``singlehtml`` builder writes the whole book as one page (into
   ``BOOK/_build/pdf/_build/singlehtml``), its notebooks run through the same execution cache
   as ``make book``: after ``make book`` in the same mode, nothing executes again.
2. The Chromium that ``make check-html`` drives (Playwright, Debian's ``chromium``) opens that
   page from a loopback server with every other request blocked, waits until MathJax has
   typeset every formula and every image has loaded, and prints it to PDF (A4, page numbers,
   a bookmark per heading, each chapter on a new page).

The instructor edition (the default) prints every solution opened; the student edition
removes the solutions and the instructor-only hidden tests of the check cells. Output:
``_build/pdf/conserved.pdf`` and ``_build/pdf/conserved-student.pdf``.

Why Chromium and not LaTeX: the browser is already part of the project (the browser check), so
the PDF costs no new system package, where TeX Live with xelatex is several hundred MB to a few
GB from Debian; and it prints exactly what the reader sees (the same MathJax maths, figures,
exercise and solution boxes, results tables), not a second rendering through Sphinx's LaTeX
writer, which handles neither the notebooks' HTML outputs nor sphinx-exercise's gated
solutions as the web page does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_html  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EDITIONS = ("instructor", "student")

PRINT_CSS = """
@page { size: A4; margin: 14mm 12mm 16mm 12mm; }
html, body { background: white !important; }
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article,
.header-article-items, .prev-next-area, .bd-footer, .bd-footer-article, .bd-footer-content,
footer, #pst-back-to-top, .search-button-field, .skip-link, .toggle-button,
button.toggle-button, .headerlink, .copybtn, #pst-skip-link { display: none !important; }
.bd-container, .bd-container__inner, .bd-page-width, .bd-main, .bd-content,
.bd-article-container, .bd-article { max-width: 100% !important; width: 100% !important;
  margin: 0 !important; padding: 0 !important; display: block !important; }
/* Chromium ignores page breaks inside flex and grid boxes: the theme's layout is one. */
body, .bd-page-width, .bd-container, .bd-container__inner, .bd-main, .bd-content,
.bd-article-container, .bd-article, article, section { display: block !important;
  float: none !important; overflow: visible !important; }
.conserved-new-page { break-before: page !important; page-break-before: always !important; }
.cell_output img, figure img { max-width: 100% !important; break-inside: avoid; }
.admonition, .cell, div.highlight, table { break-inside: avoid; }
h1, h2, h3 { break-after: avoid; }
pre { white-space: pre-wrap !important; overflow-wrap: anywhere; }
"""

# Runs in the page before printing: the edition's solutions, opened or removed.
_EDITION = """(edition) => {
  const solutions = [...document.querySelectorAll(".admonition.solution, div.solution")];
  if (edition === "student") {
    solutions.forEach(el => el.remove());
    // A code cell that holds a solution outside a gated block, and hidden tests.
    document.querySelectorAll("div.cell").forEach(cell => {
      if (cell.textContent.includes("# BEGIN SOLUTION")) cell.remove();
    });
    document.querySelectorAll("pre").forEach(pre => {
      const text = pre.textContent;
      if (!text.includes("# BEGIN HIDDEN TESTS")) return;
      const hidden = /[ \\t]*# BEGIN HIDDEN TESTS[\\s\\S]*?# END HIDDEN TESTS[^\\n]*\\n?/g;
      pre.textContent = text.replace(hidden, "");
    });
  } else {
    // Open every solution (sphinx-togglebutton's collapsed dropdowns), nothing else.
    solutions.forEach(solution => {
      [solution, ...solution.querySelectorAll(".toggle-hidden")]
        .forEach(el => el.classList.remove("toggle-hidden", "dropdown"));
      solution.querySelectorAll("details").forEach(el => el.open = true);
    });
  }
  // Each page of the book (a chapter, a front-matter page) starts on a new sheet.
  // (Sphinx's single page marks where each one begins with a span id="document-...".)
  document.querySelectorAll('span[id^="document-"]').forEach(mark => {
    const first = mark.querySelector("section") || mark.nextElementSibling || mark;
    first.classList.add("conserved-new-page");
  });
  document.querySelectorAll("img").forEach(img => img.loading = "eager");
  return solutions.length;
}"""

# Runs in the page: what would be printed wrongly (maths MathJax has not typeset).
_UNTYPESET = """() => [...document.querySelectorAll(".math")]
  .filter(el => !el.parentElement.closest(".math") && !el.querySelector("mjx-container"))
  .map(el => el.textContent.trim().slice(0, 60))"""

_FIGURES = """() => [...document.querySelectorAll(".cell_output img, figure img")]
  .filter(img => img.complete && img.naturalWidth > 0).length"""


def build_singlehtml(book: Path) -> Path:
    """The book as one HTML page (through the execution cache); returns its folder."""
    out = book / "_build" / "pdf"
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(book), "--builder", "singlehtml"]
    command += ["--all", "-W", "--keep-going", "--path-output", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-6000:])
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"pdf: the single-page build of {book} failed")
    return out / "_build" / "singlehtml"


def _root_page(html_dir: Path) -> str:
    """The single page: index.html, or the page that Jupyter Book's index.html redirects to.
    Sphinx writes a root document in a folder (``book/intro``) there but links its assets
    (``_static/``, ``_images/``) as if it sat at the top: the page is copied to the top."""
    index = (html_dir / "index.html").read_text(errors="replace")
    redirect = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index)
    if not redirect:
        return "index.html"
    page = redirect[1]
    if "/" in page:
        top = html_dir / "conserved-single-page.html"
        top.write_text((html_dir / page).read_text(errors="replace"))
        return top.name
    return page


def print_pdf(html_dir: Path, out: Path, edition: str, chromium: str | None = None) -> dict:
    """Print the single page of ``html_dir`` to ``out`` in headless Chromium; returns what it
    saw."""
    from playwright.sync_api import sync_playwright

    executable = check_html.find_chromium(chromium)
    if executable is None:
        raise SystemExit(
            "pdf: no Chromium found ($CHROMIUM, chromium on PATH); `make browser` installs "
            "Debian's chromium (as root)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with check_html.LoopbackServer(html_dir) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            context = browser.new_context(viewport=check_html.VIEWPORT)
            context.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if check_html._is_local(route.request.url)
                    else route.abort("blockedbyclient")
                ),
            )
            page = context.new_page()
            page.set_default_timeout(300_000)
            page.goto(f"{server.url}/{_root_page(html_dir)}", wait_until="load")
            solutions = page.evaluate(_EDITION, edition)
            page.add_style_tag(content=PRINT_CSS)
            page.evaluate(check_html._SETTLE, 240_000)
            untypeset = page.evaluate(_UNTYPESET)
            if untypeset:
                raise SystemExit(
                    f"pdf: {len(untypeset)} formulas not typeset by MathJax, e.g. {untypeset[:3]}"
                )
            figures = page.evaluate(_FIGURES)
            page.emulate_media(media="print")
            page.pdf(
                path=str(out),
                format="A4",
                print_background=True,
                display_header_footer=True,
                header_template="<span></span>",
                footer_template=(
                    '<div style="font-size:8px;width:100%;text-align:center;">'
                    '<span class="pageNumber"></span></div>'
                ),
                margin={"top": "14mm", "bottom": "16mm", "left": "12mm", "right": "12mm"},
                outline=True,
                tagged=True,
            )
        finally:
            browser.close()
    return {"figures": figures, "solutions": solutions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", default=ROOT, type=Path, help="the book's folder")
    parser.add_argument("--edition", default=os.environ.get("EDITION") or "instructor")
    parser.add_argument("--out", type=Path, help="default: BOOK/_build/pdf/conserved[-student].pdf")
    parser.add_argument("--chromium", help="the Chromium executable (default: on PATH)")
    parser.add_argument("--no-build", action="store_true", help="print the existing build")
    args = parser.parse_args(argv)
    if args.edition not in EDITIONS:
        parser.error(f"--edition must be one of {EDITIONS}, got {args.edition!r}")
    book = args.book.resolve()
    suffix = "" if args.edition == "instructor" else f"-{args.edition}"
    out = (args.out or book / "_build" / "pdf" / f"conserved{suffix}.pdf").resolve()
    started = time.perf_counter()
    html_dir = book / "_build" / "pdf" / "_build" / "singlehtml"
    if not args.no_build:
        html_dir = build_singlehtml(book)
    built = time.perf_counter()
    seen = print_pdf(html_dir, out, args.edition, args.chromium)
    size = out.stat().st_size / 1e6
    pages = len(re.findall(rb"/Type\s*/Page\b", out.read_bytes()))
    print(
        f"pdf: {out} ({args.edition} edition): {pages} pages, {size:.1f} MB, "
        f"{seen['figures']} figures; build {built - started:.0f} s, print "
        f"{time.perf_counter() - built:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

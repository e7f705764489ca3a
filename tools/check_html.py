"""Check the built book the way a reader meets it: in a real browser, offline.

Usage (``make check-html`` runs this on ``_build/html``)::

    .venv/bin/python tools/check_html.py [HTML_DIR] [--toc _toc.yml] [--screenshots DIR]

The book in HTML_DIR is served on a loopback HTTP server (127.0.0.1, a free port) and every
page that ``_toc.yml`` lists is opened in headless Chromium, driven by Playwright for Python.
Playwright never downloads a browser here: it launches the system's Chromium (Debian's
``chromium`` package; ``make browser`` installs it), found on PATH or named by ``--chromium``
or the ``CHROMIUM`` environment variable. Each page must:

1. load (HTTP 200) with no console error, no uncaught script error, no local resource missing,
   and no request leaving the machine: every request to a host other than 127.0.0.1 or
   localhost is blocked and reported (MathJax, fonts, scripts and styles must be local);
2. show typeset maths: no raw ``$$``, ``\\begin{``, ``\\(`` or ``\\[`` in its text outside
   code, and a MathJax ``mjx-container`` inside every maths element (a page with maths has
   MathJax output); and show its results tables as tables: no Markdown rule row (``|---|``)
   in its text outside code;
3. load every image (``complete`` and ``naturalWidth > 0``); a chapter shows at least the
   figures (loaded images in cell outputs or figures) its issue asked for, see ``MIN_FIGURES``;
4. render its exercises and solutions (a chapter at least ``min_exercises`` of each); every
   solution is collapsed when the page opens, and one click on its title shows it.

5. link only to what the book owns: outside the article's text (header buttons, navigation,
   footer) every link stays on the site or goes to the book's repository (``repository.url`` in
   ``_config.yml``, or ``--repository``/``$CONSERVED_REPOSITORY_URL``) and the launch services
   opened on it (Binder, Colab); anywhere, a launch link must open the book's repository. With
   no repository set, a repository or launch button is a failure. Links in the text to papers
   and documentation are fine. This part reads the HTML files and needs no browser.

On the first page it also tries the table-of-contents button: on a phone-sized screen one
click shows the navigation, on a desktop one click hides it.

It saves a screenshot of each page's first screen to ``_build/screenshots/<page>.png``
(``00_jax_primer.png``, ...), prints one summary line per page, then every failure, and exits
with status 1 when there is any.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import editions  # noqa: E402

# Figures (images in notebook cell outputs) that each chapter must show, keyed by its file in
# _toc.yml. At least what each chapter's issue asked for (issues 2-8); where the book already
# shows more (the primer 2 where its issue asked for 1, chapter 2 five where it asked for 4),
# the table holds it there. A chapter missing from the table needs at least one figure.
MIN_FIGURES = {
    "chapters/00_jax_primer": 2,
    "chapters/01_symmetries": 3,
    "chapters/02_noether": 5,
    "chapters/03_noethers_razor": 5,
    "chapters/04_parameter_symmetry": 4,
    "chapters/05_pinn_projection": 4,
    "chapters/06_conserving_operators": 4,
}
DEFAULT_MIN_FIGURES = 1

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about", "file"}
RAW_MATH = ("$$", "\\begin{", "\\(", "\\[")
# A Markdown table printed as text: its rule row, as written or after smart quotes.
RAW_TABLE = ("|---|", "|—|", "| --- |")
VIEWPORT = {"width": 1280, "height": 800}
PAGE_TIMEOUT_MS = 60_000


def min_exercises(page: str) -> int:
    """Exercises (and solutions) a page must show: 1 in the primer, 3 in later chapters."""
    if not page.startswith("chapters/"):
        return 0
    return 1 if page.endswith("00_jax_primer") else 3


def min_figures(page: str) -> int:
    if not page.startswith("chapters/"):
        return 0
    return MIN_FIGURES.get(page, DEFAULT_MIN_FIGURES)


def toc_pages(toc: Path) -> list[str]:
    """Every file that a Jupyter Book ``_toc.yml`` lists, root first, in reading order."""
    data = yaml.safe_load(toc.read_text())
    pages = [data["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(data.get("parts"))
    walk(data.get("chapters"))
    walk(data.get("sections"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", page) for page in pages]


# Links that launch a notebook somewhere: they must open the book's own repository.
LAUNCH_PREFIXES = (
    "https://mybinder.org/v2/",
    "https://colab.research.google.com/github/",
    "https://colab.research.google.com/drive/",
    "https://deepnote.com/launch",
)


class _Links(html.parser.HTMLParser):
    """Every ``<a href>`` of a page, with whether it sits in the article's text."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, bool]] = []
        self._open: list[str] = []  # the elements open here, outermost first

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self._open.append(tag)
        self.handle_startendtag(tag, attrs)

    def handle_startendtag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append((href, "article" in self._open))

    def handle_endtag(self, tag):
        # Close up to the matching element (a tag left open inside it closes with it).
        if tag in self._open:
            while self._open.pop() != tag:
                pass


def foreign_links(page_html: str, repository: str = "") -> list[str]:
    """The links of a page to what the book does not own: outside the article's text, any link
    off the site except to ``repository`` and its launch services; anywhere, a launch link that
    does not open ``repository``."""
    owned = editions.owned_link_prefixes(repository)
    parser = _Links()
    parser.feed(page_html)
    found = []
    for href, in_text in parser.links:
        if urlsplit(href).scheme not in ("http", "https") and not href.startswith("//"):
            continue  # on the site (relative, #anchor, mailto:, javascript:)
        if _is_local(href) or href.startswith(tuple(owned)) or href == repository:
            continue
        if not in_text or href.startswith(LAUNCH_PREFIXES):
            found.append(href)
    return list(dict.fromkeys(found))


def check_links(html_dir: Path, pages: list[str], repository: str = "") -> dict[str, list[str]]:
    """Per page, a failure message for each link to a host the book does not own."""
    failures = {}
    for name in pages:
        path = Path(html_dir) / f"{name}.html"
        if not path.is_file():
            continue
        where = f"the book's repository {repository}" if repository else "no repository is set"
        failures[name] = [
            f"links to a host the book does not own ({where}): {href}"
            for href in foreign_links(path.read_text(errors="replace"), repository)
        ]
    return failures


@dataclass
class PageReport:
    page: str
    seconds: float = 0.0
    figures: int = 0
    images: int = 0
    maths: int = 0
    typeset: int = 0
    exercises: int = 0
    solutions: int = 0
    figures_needed: int = 0
    screenshot: Path | None = None
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # MathJax's fonts are woff: label them whatever the host's mime.types says.
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".woff": "font/woff",
        ".woff2": "font/woff2",
    }

    def log_message(self, format, *args):  # the base class names it `format`
        pass


class LoopbackServer:
    """Serve a folder on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def find_chromium(explicit: str | None = None) -> str | None:
    """The system Chromium: ``explicit``, else $CHROMIUM, else chromium on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate:
            path = shutil.which(candidate)
            if path:
                return path
    return None


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOCAL_HOSTS


# Runs in the page once it has loaded: wait for MathJax to finish and every image to settle.
_SETTLE = """async (timeoutMs) => {
  const deadline = new Promise(resolve => setTimeout(resolve, timeoutMs));
  const mathjax = (window.MathJax && MathJax.startup && MathJax.startup.promise) || null;
  const images = [...document.images].map(img => {
    img.loading = "eager";
    return img.complete ? null : new Promise(r => { img.onload = img.onerror = r; });
  });
  await Promise.race([Promise.all([mathjax, ...images]), deadline]);
  if (document.fonts) await Promise.race([document.fonts.ready, deadline]);
}"""

# Runs in the page: what it shows. Text is read from text nodes outside code, so a raw `$$`
# inside a collapsed solution counts too; maths elements are Sphinx's `.math` spans and divs.
_INSPECT = """(rawMarkers) => {
  const skip = "script, style, noscript, template, textarea, pre, code, kbd, samp, "
    + "mjx-container, .highlight";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement && node.parentElement.closest(skip)) continue;
    const text = node.textContent;
    const found = rawMarkers.map(m => text.indexOf(m)).filter(at => at >= 0);
    if (found.length) {
      const at = Math.min(...found);
      raw.push(text.substr(Math.max(0, at - 30), 80).replace(/\\s+/g, " ").trim());
    }
  }
  const maths = [...document.querySelectorAll(".math")]
    .filter(el => !el.parentElement.closest(".math"));
  const untypeset = maths.filter(el => !el.querySelector("mjx-container"))
    .map(el => el.textContent.replace(/\\s+/g, " ").trim().slice(0, 60));
  const broken = [...document.images]
    .filter(img => !(img.complete && img.naturalWidth > 0))
    .map(img => img.getAttribute("src"));
  const figures = new Set([...document.querySelectorAll(".cell_output img, figure img")]
    .filter(img => img.complete && img.naturalWidth > 0));
  return {
    raw,
    maths: maths.length,
    typeset: maths.length - untypeset.length,
    mjx: document.querySelectorAll("mjx-container").length,
    untypeset,
    images: document.images.length,
    broken,
    figures: figures.size,
    exercises: document.querySelectorAll(".admonition.exercise").length,
    solutions: document.querySelectorAll(".admonition.solution").length,
  };
}"""

# A solution's body: everything but its title. Visible means displayed, not hidden, not
# transparent, with a non-empty box (sphinx-togglebutton hides by height 0 and visibility).
_SOLUTION_BODY_VISIBLE = """(solution) => {
  const body = [...solution.children].filter(el => !el.classList.contains("admonition-title"));
  return body.length > 0 && body.some(el => {
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    return style.display !== "none" && style.visibility !== "hidden"
      && Number(style.opacity) > 0 && box.width > 0 && box.height > 0;
  });
}"""


def _check_solutions(page, report: PageReport) -> None:
    solutions = page.locator(".admonition.solution")
    for index in range(solutions.count()):
        solution = solutions.nth(index)
        label = solution.locator(".admonition-title").first.inner_text().strip() or "solution"
        label = f"solution {index + 1} ({label.splitlines()[0][:50]})"
        if "dropdown" not in (solution.get_attribute("class") or "").split():
            report.fail(f"{label} is not a dropdown (give it `:class: dropdown`)")
        if solution.evaluate(_SOLUTION_BODY_VISIBLE):
            report.fail(f"{label} is shown when the page opens; it must start collapsed")
            continue
        title = solution.locator(".admonition-title").first
        try:
            title.scroll_into_view_if_needed(timeout=5_000)
            title.click(timeout=5_000)
            page.wait_for_function(
                _SOLUTION_BODY_VISIBLE, arg=solution.element_handle(), timeout=5_000
            )
        except Exception as error:  # any failure to open it is the finding
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            report.fail(f"{label} does not open when its title is clicked ({first_line})")


# Any link of the book's navigation (the primary sidebar) shown on screen.
_NAVIGATION_SHOWN = """() => [...document.querySelectorAll(".bd-docs-nav a")].some(a => {
  const style = getComputedStyle(a);
  const box = a.getBoundingClientRect();
  return style.visibility !== "hidden" && style.display !== "none" && box.width > 0
    && box.height > 0 && box.right > 0 && box.left < innerWidth && box.bottom > 0
    && box.top < innerHeight;
})"""

NARROW = {"width": 400, "height": 800}


def check_navigation(context, url: str, report: PageReport) -> None:
    """The table-of-contents button works: on a phone-sized screen the navigation starts
    hidden and one click on the visible button shows it; on a wide screen it starts shown and
    one click hides it."""
    for viewport, shown_first, what in ((NARROW, False, "a phone"), (VIEWPORT, True, "a desktop")):
        page = context.new_page()
        page.set_viewport_size(viewport)
        try:
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle", timeout=10_000)
            if page.evaluate(_NAVIGATION_SHOWN) != shown_first:
                state = "shown" if not shown_first else "hidden"
                report.fail(f"on {what} the table of contents is {state} when the page opens")
                continue
            toggle = page.locator(".primary-toggle:visible").first
            toggle.click(timeout=5_000)
            page.wait_for_function(
                f"() => ({_NAVIGATION_SHOWN})() === {'false' if shown_first else 'true'}",
                timeout=5_000,
            )
        except Exception as error:  # a dead button, or no button, is the finding
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            action = "hide" if shown_first else "show"
            report.fail(
                f"on {what} the sidebar button does not {action} the table of contents "
                f"({first_line})"
            )
        finally:
            page.close()


def check_page(
    context,
    base_url: str,
    page_name: str,
    screenshots: Path | None,
    figures_needed: int,
    exercises_needed: int,
    navigation: bool = False,
) -> PageReport:
    """Open one page in a fresh tab and check it; returns what it found."""
    report = PageReport(page_name, figures_needed=figures_needed)
    page = context.new_page()
    console_errors: list[str] = []
    external: list[str] = []
    missing: list[str] = []

    def on_console(message):
        if message.type == "error":
            location = message.location or {}
            where = location.get("url", "")
            console_errors.append(f"{message.text}" + (f" ({where})" if where else ""))

    def on_response(response):
        if response.status >= 400 and _is_local(response.url):
            missing.append(f"{response.status} {response.url.removeprefix(base_url)}")

    def on_request(request):
        if not _is_local(request.url):
            external.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))
    page.on("request", on_request)
    page.on("response", on_response)

    started = time.perf_counter()
    try:
        response = page.goto(f"{base_url}/{page_name}.html", wait_until="load")
        if response is None or response.status != 200:
            status = response.status if response else "no response"
            report.fail(f"{page_name}.html did not load (HTTP {status})")
            return report
        page.evaluate(_SETTLE, PAGE_TIMEOUT_MS // 2)
        try:
            page.wait_for_load_state("networkidle", timeout=10_000)
        except Exception:  # a page that keeps polling is still checked
            pass
        report.seconds = time.perf_counter() - started

        if screenshots is not None:
            report.screenshot = screenshots / f"{Path(page_name).name}.png"
            page.screenshot(path=str(report.screenshot), full_page=False)

        seen = page.evaluate(_INSPECT, [*RAW_MATH, *RAW_TABLE])
        report.figures, report.images = seen["figures"], seen["images"]
        report.maths, report.typeset = seen["maths"], seen["typeset"]
        report.exercises, report.solutions = seen["exercises"], seen["solutions"]

        for snippet in dict.fromkeys(seen["raw"]):
            if any(marker in snippet for marker in RAW_TABLE):
                report.fail(f"Markdown table shown as text, not as a table: ...{snippet}...")
            else:
                report.fail(f"raw maths left in the text: ...{snippet}...")
        if seen["untypeset"]:
            shown = "; ".join(seen["untypeset"][:3])
            report.fail(
                f"{len(seen['untypeset'])} of {seen['maths']} maths elements not typeset by "
                f"MathJax (no mjx-container), e.g. {shown}"
            )
        for src in seen["broken"]:
            report.fail(f"image did not load: {src}")
        if report.figures < figures_needed:
            report.fail(
                f"shows {report.figures} figures, its issue asks for at least {figures_needed}"
            )
        if report.exercises < exercises_needed:
            report.fail(f"shows {report.exercises} exercises, needs at least {exercises_needed}")
        if report.solutions < exercises_needed:
            report.fail(f"shows {report.solutions} solutions, needs at least {exercises_needed}")
        _check_solutions(page, report)
        if navigation:
            check_navigation(context, f"{base_url}/{page_name}.html", report)
    except Exception as error:  # report it and go on to the next page
        report.fail(f"browser error: {str(error).strip().splitlines()[0]}")
    finally:
        if not report.seconds:
            report.seconds = time.perf_counter() - started
        page.close()
        for message in console_errors:
            report.fail(f"console error: {message}")
        for url in dict.fromkeys(external):
            report.fail(f"request leaves the machine (blocked): {url}")
        for item in dict.fromkeys(missing):
            report.fail(f"local resource missing: {item}")
    return report


def check_site(
    html_dir: Path,
    pages: list[str],
    *,
    screenshots: Path | None = None,
    chromium: str | None = None,
    figures_needed: Callable[[str], int] = min_figures,
    exercises_needed: Callable[[str], int] = min_exercises,
    navigation: set[str] | None = None,
    repository: str | None = None,
) -> list[PageReport]:
    """Serve ``html_dir`` on loopback and check each page in headless Chromium.

    ``figures_needed`` and ``exercises_needed`` map a page to what it must show (by default
    ``MIN_FIGURES`` and ``min_exercises``); the table-of-contents button is tried on the pages
    in ``navigation`` (by default the first page: every page has the same one). Links are
    checked against ``repository`` (by default the book's setting, see ``foreign_links``).
    """
    from playwright.sync_api import sync_playwright

    navigation = {pages[0]} if navigation is None and pages else (navigation or set())

    executable = find_chromium(chromium)
    if executable is None:
        raise FileNotFoundError(
            "no Chromium found (looked for $CHROMIUM, chromium, chromium-browser on PATH); "
            "`make browser` installs Debian's chromium (as root)"
        )
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    if repository is None:
        repository = editions.configured_repository(ROOT)[0]
    links = check_links(html_dir, pages, repository)
    reports = []
    with LoopbackServer(html_dir) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            # No DNS look-ups ahead of links either: nothing of the check leaves the machine.
            args=["--dns-prefetch-disable", "--no-pings"],
        )

        # Nothing leaves the machine: any request to another host is aborted here (and
        # reported by check_page, which sees it before it is routed).
        def route(route):
            if _is_local(route.request.url):
                route.continue_()
            else:
                route.abort("blockedbyclient")

        try:
            for name in pages:
                # A fresh browser profile for each page: every page is a reader's first visit
                # (no stored theme mode or sidebar scroll from the page before).
                context = browser.new_context(viewport=VIEWPORT, service_workers="block")
                context.set_default_timeout(PAGE_TIMEOUT_MS)
                context.route("**/*", route)
                try:
                    reports.append(
                        check_page(
                            context,
                            server.url,
                            name,
                            screenshots,
                            figures_needed(name),
                            exercises_needed(name),
                            navigation=name in navigation,
                        )
                    )
                    for message in links.get(name, []):
                        reports[-1].fail(message)
                finally:
                    context.close()
        finally:
            browser.close()
    return reports


def summary(reports: list[PageReport]) -> str:
    header = f"{'page':<34} {'load s':>6} {'figures':>8} {'maths':>11} {'exercises':>9}  result"
    lines = [header, "-" * len(header)]
    for r in reports:
        figures = f"{r.figures}/{r.figures_needed}" if r.figures_needed else str(r.figures)
        maths = f"{r.typeset}/{r.maths}"
        exercises = f"{r.exercises}+{r.solutions}s"
        result = "ok" if not r.failures else f"FAILED ({len(r.failures)})"
        lines.append(
            f"{r.page:<34} {r.seconds:>6.1f} {figures:>8} {maths:>11} {exercises:>9}  {result}"
        )
    total = sum(r.seconds for r in reports)
    lines.append(
        f"{len(reports)} pages, {total:.1f} s in the browser. load s: until typeset with its "
        "images in; figures: found/needed; maths: typeset/elements; exercises: "
        "exercises+solutions"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--toc", default=ROOT / "_toc.yml", type=Path)
    parser.add_argument("--screenshots", default=ROOT / "_build" / "screenshots", type=Path)
    parser.add_argument("--chromium", help="the Chromium executable (default: on PATH)")
    parser.add_argument(
        "--repository",
        help="the book's repository URL (default: _config.yml's, or $CONSERVED_REPOSITORY_URL)",
    )
    args = parser.parse_args(argv)

    html_dir = args.html_dir.resolve()
    if not (html_dir / "index.html").is_file():
        print(
            f"check-html: no built book in {html_dir} (no index.html); build it first with "
            "`make book` (or `make quick-book` and HTML_DIR=_build/quick/_build/html)",
            file=sys.stderr,
        )
        return 2
    pages = toc_pages(args.toc)
    started = time.perf_counter()
    try:
        reports = check_site(
            html_dir,
            pages,
            screenshots=args.screenshots,
            chromium=args.chromium,
            repository=None
            if args.repository is None
            else editions.repository_url(args.repository, env={}),
        )
    except FileNotFoundError as error:
        print(f"check-html: {error}", file=sys.stderr)
        return 2
    print(f"check-html: {html_dir} in headless Chromium, {len(pages)} pages from {args.toc.name}")
    print(summary(reports))
    print(f"screenshots in {args.screenshots}; {time.perf_counter() - started:.1f} s in all")
    failures = [(r.page, message) for r in reports for message in r.failures]
    if failures:
        print(f"\ncheck-html: {len(failures)} failure(s):", file=sys.stderr)
        for page, message in failures:
            print(f"  {page}: {message}", file=sys.stderr)
        sys.stderr.flush()
    failed = sum(1 for r in reports if r.failures)
    # The closing line counts pages: "check-html: 10 passed, 0 failed".
    print(f"check-html: {len(reports) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

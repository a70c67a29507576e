"""The built book, page by page: every internal link and image resolves, and in headless
Chromium no page shows a MathJax error, an image that did not load, or a JavaScript console
error. One screenshot per page goes to ``_build/screenshots/``.

``make test`` builds the book first. Without Chromium and its driver (Debian's ``chromium`` and
``chromium-driver``) the browser half is skipped, and pytest says so; ``.ci/run`` installs them.
"""

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")
# the pages of the current book (the toc, plus Sphinx's own pages), not stale files of an
# earlier build that an incremental build leaves behind
DOCS = ["index", "genindex", "search"] + re.findall(r"(?:root|file):\s*(\S+)",
                                                    (ROOT / "_toc.yml").read_text())
PAGES = [Path(f"{d}.html") for d in DOCS if (HTML / f"{d}.html").exists()] if HTML.exists() else []
needs_book = pytest.mark.skipif(not PAGES, reason="the book is not built (run `make test`)")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links, self.images = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])


def _parse(path):
    refs = _Refs()
    refs.feed(path.read_text(errors="replace"))
    return refs


@needs_book
def test_internal_links_and_images_resolve():
    parsed = {page: _parse(HTML / page) for page in PAGES}
    broken = []
    for page, refs in parsed.items():
        for target in refs.links + refs.images:
            parts = urlsplit(target)
            if parts.scheme or target.startswith(("//", "mailto:", "javascript:")):
                continue
            file = ((HTML / page).parent / unquote(parts.path)).resolve() if parts.path else HTML / page
            if HTML.resolve() not in file.parents and file != HTML.resolve():
                broken.append(f"{page}: {target} (outside the built book)")
                continue
            if not file.exists():
                broken.append(f"{page}: {target} (no such file)")
                continue
            if parts.fragment and file.suffix == ".html":
                rel = file.relative_to(HTML.resolve())
                ids = parsed[rel].ids if rel in parsed else _parse(file).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page}: {target} (no such anchor)")
    assert not broken, "\n".join(broken)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        message = ("Chromium or chromedriver not found: the browser check was SKIPPED "
                   "(apt-get install chromium chromium-driver)")
        if os.environ.get("CROWDLIB_REQUIRE_BROWSER"):
            pytest.fail(message.replace("was SKIPPED", "cannot run"))
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => done("typeset")).catch(e => done("error: " + e));
} else { done("no math"); }
"""
PROBLEMS = """
return {
  mathjax: Array.from(document.querySelectorAll(
               "mjx-merror, .MathJax_Error, [data-mjx-error], mjx-container [style*='red']"))
             .map(e => e.getAttribute("data-mjx-error") || e.textContent).slice(0, 5),
  images: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)
             .map(i => i.getAttribute("src")).slice(0, 5),
};
"""


@needs_book
@pytest.mark.parametrize("page", PAGES, ids=str)
def test_page_renders_in_chromium(browser, page):
    browser.get_log("browser")  # drop anything left from the previous page
    browser.get((HTML / page).as_uri())
    state = browser.execute_async_script(WAIT_FOR_MATHJAX)
    found = browser.execute_script(PROBLEMS)
    console = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    browser.save_screenshot(str(SHOTS / (re.sub(r"[^\w.-]", "_", str(page)) + ".png")))
    assert not state.startswith("error"), f"{page}: MathJax failed: {state}"
    assert not found["mathjax"], f"{page}: MathJax errors: {found['mathjax']}"
    assert not found["images"], f"{page}: images that did not load: {found['images']}"
    assert not console, f"{page}: JavaScript console errors:\n" + "\n".join(console)

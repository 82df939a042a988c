"""The built documentation site, opened in a real headless browser.

Build the site first (``pip install ".[docs]"``, then ``sphinx-build -W -b html docs
docs/_build/html``); the browser is Debian's Chromium with its chromedriver (``apt-get
install chromium chromium-driver``), driven by Selenium (in the ``docs`` extra). Without
the built site or the browser these tests skip and say which is missing; ``.ci/run``
installs both and builds the site before running them.

Each page is checked for what a reader would notice: that it rendered (a title and a
heading), that every image loaded (``naturalWidth > 0`` after loading), that its math was typeset
(MathJax is copied into the site, so this holds offline), and that every
link into the site leads to a file that exists and, with a ``#fragment``, to an element
with that id. A screenshot of each page is saved under ``docs/_build/screenshots/``.
"""

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
BUILD = 'sphinx-build -W -b html docs docs/_build/html (after pip install ".[docs]")'

# page, and the fewest images it must show (the notebook's are its stored plots)
PAGES = {
    "index.html": 1,
    "api/generated/varshift.measure.html": 0,
    "notebooks/03_measuring_a_network.html": 3,
    "gallery.html": 18,  # every figure of figures/
    "figures/REPORT.html": 18,
}


def _browser_parts():
    """Paths of Chromium and chromedriver, or the reason they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, 'selenium is not installed (pip install ".[docs]")'
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None, "no headless browser: apt-get install chromium chromium-driver"
    return (browser, driver), None


@pytest.fixture(scope="module")
def browser():
    if not (SITE / "index.html").is_file():
        pytest.skip(f"the documentation site is not built in {SITE}: run {BUILD}")
    parts, reason = _browser_parts()
    if parts is None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = parts[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(parts[1]), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _ids(path, cache={}):  # noqa: B006  (one parse per file for the whole module)
    if path not in cache:
        html = path.read_text(encoding="utf-8", errors="replace")
        cache[path] = set(re.findall(r'\b(?:id|name)="([^"]+)"', html))
    return cache[path]


def _broken_internal_links(hrefs):
    """The links among ``hrefs`` (absolute URLs) into the site that lead nowhere."""
    broken = []
    for href in hrefs:
        url = urlsplit(href)
        if url.scheme != "file":
            continue  # outside the site (https, mailto)
        target = Path(unquote(url.path))
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href} (no such file)")
        elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _ids(target):
            broken.append(f"{href} (no element with id {url.fragment!r})")
    return broken


@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders_with_images_and_working_links(browser, page):
    path = SITE / page
    assert path.is_file(), f"{page} is missing from the built site"
    browser.get(path.as_uri())
    browser.execute_async_script(  # wait until every image has loaded or failed
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? null :"
        " new Promise(r => { i.onload = i.onerror = r; }))).then(done);")
    math_typeset = browser.execute_async_script(  # MathJax is served by the site itself
        "const done = arguments[arguments.length - 1];"
        "if (!document.querySelector('article .math')) { done(null); return; }"
        "if (!window.MathJax || !MathJax.startup) { done(false); return; }"
        "MathJax.startup.promise.then("
        " () => done(document.querySelectorAll('article mjx-container').length > 0),"
        " () => done(false));")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / (page.replace("/", "_") + ".png")))

    assert browser.title.strip(), f"{page} has no title"
    headings = browser.execute_script(
        "return [...document.querySelectorAll('article h1')].map(h => h.textContent)")
    assert headings, f"{page} shows no heading: the page did not render"

    assert math_typeset is not False, f"{page}: its math was not typeset (MathJax not loaded)"

    images = browser.execute_script(
        "return [...document.querySelectorAll('article img')]"
        ".map(i => [i.currentSrc || i.src, i.naturalWidth])")
    assert len(images) >= PAGES[page], f"{page} shows {len(images)} images: {images}"
    unloaded = [src for src, width in images if not width]
    assert not unloaded, f"{page}: images that did not load: {unloaded}"

    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.href)")
    assert any(urlsplit(h).scheme == "file" for h in hrefs), f"{page} has no internal link"
    broken = _broken_internal_links(hrefs)
    assert not broken, f"{page}: broken internal links:\n" + "\n".join(broken)


def test_link_checker_finds_missing_files_and_anchors(tmp_path):
    # the check above must be able to fail: a missing file and a missing anchor
    page = tmp_path / "page.html"
    page.write_text('<h1 id="top">t</h1>', encoding="utf-8")
    good = [page.as_uri(), page.as_uri() + "#top", "https://example.org/x"]
    bad = [(tmp_path / "gone.html").as_uri(), page.as_uri() + "#nowhere"]
    assert _broken_internal_links(good) == []
    assert len(_broken_internal_links(bad)) == 2

"""The website, checked in a real browser, offline.

The built site is served on 127.0.0.1 and every page of the table of contents is opened in
headless Chromium (Debian's ``chromium``, driven by Playwright).  The JavaScript that the pages
load from CDNs (RequireJS, @jupyter-widgets/html-manager, MathJax) is served from copies fetched
from the npm registry, so the test needs no network beyond the package registries.  A
screenshot of every page is saved under ``test-artifacts/screenshots``.

Per page, as a reader meets it:

* no JavaScript error, no console error and no failed request (a 4xx/5xx answer, a request
  that fails, or one to a server the page should not need), each reported with its URL;
* every image loaded, and the "Open in Colab" link points at that page's notebook;
* every visible widget control (slider, menu, button, check box) changes the pictures the widget
  shows, with no kernel, the widget keeps its height while it switches (no jumping), and its
  pictures keep their proportions;
* at 390 px wide (a phone) nothing sticks out sideways: the page does not scroll horizontally,
  and no inline code, table, picture or widget runs past the edge outside a scrolling box;
* no test scaffolding (``NBVAL_...`` markers) and no raw Markdown table (a ``|---|`` line) in the
  visible text;
* the page's own HTML stays under 1.5 MB.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "_build" / "browser-assets"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
REPO = "unet-edu/unet-edu"

# CDN prefix -> (npm package spec, folder inside the unpacked package)
CDN = {
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/": ("requirejs@2.3.4", ""),
    "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/": ("@jupyter-widgets/html-manager@1.0.6", "dist/"),
    "https://cdn.jsdelivr.net/npm/mathjax@3/": ("mathjax@3", ""),
}
# The page asks for require.min.js; npm's requirejs ships the same library unminified.
RENAMES = {"require.min.js": "require.js"}

pytestmark = pytest.mark.browser

PAGE_BUDGET = 1_500_000  # bytes of a page's own HTML (figures and widget frames are inside it)
PHONE = {"width": 390, "height": 844}


def _pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters") or []]
    return files


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def npm_assets() -> dict[str, Path]:
    """Unpack the npm copies of the CDN files into _build/browser-assets (once)."""
    folders = {}
    for prefix, (spec, sub) in CDN.items():
        name = spec.rsplit("@", 1)[0].replace("@", "").replace("/", "-") + "-" + spec.rsplit("@", 1)[1]
        target = ASSETS / name
        if not (target / "package").exists():
            ASSETS.mkdir(parents=True, exist_ok=True)
            out = subprocess.run(["npm", "pack", "--silent", spec, "--pack-destination", str(ASSETS)],
                                 capture_output=True, text=True, cwd=ASSETS)
            assert out.returncode == 0, f"npm pack {spec} failed: {out.stderr[-2000:]}"
            tgz = ASSETS / out.stdout.strip().splitlines()[-1]
            with tarfile.open(tgz) as tar:
                tar.extractall(target, filter="data")
        folders[prefix] = target / "package" / sub
    return folders


@pytest.fixture(scope="session")
def site_url(built_site):
    assert built_site["returncode"] == 0, built_site["log"]
    handler = functools.partial(_QuietHandler, directory=str(built_site["html"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser():
    chromium = _chromium()
    if chromium is None:
        pytest.fail("Chromium is not installed: run `bash tests/install-browser.sh` (the README's test command does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


def _route(page, site_url: str, assets: dict[str, Path], blocked: list[str]):
    def handle(route):
        url = route.request.url
        for prefix, folder in assets.items():
            if url.startswith(prefix):
                rel = url[len(prefix):].split("?")[0]
                path = folder / RENAMES.get(rel, rel)
                if path.is_file():
                    return route.fulfill(path=str(path))
                blocked.append(url)
                return route.abort()
        if url.startswith(site_url):
            if url.split("?")[0].endswith(".html"):
                # The npm copy of RequireJS is not byte-identical to the CDN's minified file, so
                # its hash cannot match: serve the page without the integrity attributes.
                response = route.fetch()
                body = re.sub(r'\s(integrity|crossorigin)="[^"]*"', "", response.text())
                return route.fulfill(response=response, body=body)
            return route.continue_()
        if url.startswith("data:"):
            return route.continue_()
        blocked.append(url)  # no network: anything else (fonts, analytics, thebe) is refused
        return route.abort()

    page.route("**/*", handle)


def _notebook(page_file: str) -> Path | None:
    nb = ROOT / f"{page_file}.ipynb"
    return nb if nb.exists() else None


def _has_widgets(nb: Path) -> bool:
    data = json.loads(nb.read_text())
    return any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in data["cells"] for o in c.get("outputs", []))


# What each visible picture of the widgets around a control shows: its size and its pixels (an
# <img> of a widget is a blob: URL, new for every view, so its address says nothing).
SHOWN_PICTURES = """
(cell) => {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d');
  return Array.from(cell.querySelectorAll('img'))
    .filter(i => i.offsetParent !== null && i.getBoundingClientRect().width > 0 && i.complete)
    .map(i => {
      canvas.width = i.naturalWidth; canvas.height = i.naturalHeight;
      ctx.drawImage(i, 0, 0);
      return i.naturalWidth + 'x' + i.naturalHeight + ':' + canvas.toDataURL();
    });
}
"""

# The output cell that holds a control (the widget as a reader sees it).
CELL_OF = "(el) => el.closest('.cell_output') || el.closest('.jupyter-widgets')"

# Sliders, menus, toggle buttons, buttons and check boxes: everything a reader can move or press.
CONTROLS = (".jupyter-widgets .noUi-handle, .jupyter-widgets select, "
            ".jupyter-widgets button.jupyter-button, .jupyter-widgets input[type=checkbox]")


def _move(page, control) -> str | None:
    """Move one control to another value; say how, or None if it has nowhere to go."""
    tag = control.evaluate("(el) => el.tagName.toLowerCase()")
    if tag == "select":
        options = control.locator("option").all()
        current = control.input_value()
        others = [o.get_attribute("value") for o in options if o.get_attribute("value") != current]
        if not others:
            return None
        control.select_option(others[-1])
        return f"menu -> {others[-1]}"
    if "noUi-handle" in (control.get_attribute("class") or ""):
        now = control.get_attribute("aria-valuenow")
        control.focus()
        page.keyboard.press("End" if now != control.get_attribute("aria-valuemax") else "Home")
        return "slider -> end" if now != control.get_attribute("aria-valuemax") else "slider -> start"
    if tag == "input":
        control.click()
        return "check box"
    classes = control.get_attribute("class") or ""
    if "widget-toggle-button" in classes and "mod-active" in classes:
        return None  # the toggle button already pressed: pressing another one is the move
    control.click()
    return f"button {control.inner_text()!r}"


def _controls_change_the_pictures(page) -> list[str]:
    """Move every visible control; return what went wrong (a control that changes no picture,
    a widget whose height jumps).  Returns how many controls were tried as the last entry."""
    problems, tried = [], 0
    for control in page.locator(CONTROLS).all():
        if not control.is_visible():
            continue
        control.scroll_into_view_if_needed()
        cell = control.evaluate_handle(CELL_OF).as_element()
        label = control.evaluate(
            "(el) => (el.closest('.widget-inline-hbox, .widget-toggle-buttons') || el)"
            ".innerText.split('\\n')[0].slice(0, 40)")
        before = cell.evaluate(SHOWN_PICTURES)
        height = cell.bounding_box()["height"]
        how = _move(page, control)
        if how is None:
            continue
        page.wait_for_timeout(400)
        tried += 1
        after = cell.evaluate(SHOWN_PICTURES)
        if not before and not after:
            continue  # a control with no picture next to it (nothing to compare)
        if after == before:
            problems.append(f"control {label!r} ({how}) did not change the picture")
        new_height = cell.bounding_box()["height"]
        if abs(new_height - height) > 2:
            problems.append(f"control {label!r} ({how}) made the widget jump: height "
                            f"{height:.0f} -> {new_height:.0f} px")
    return problems + [tried]


# Widget pictures drawn out of proportion (an <img> box of another shape than its picture, not
# letterboxed with object-fit).
DISTORTED = """
() => Array.from(document.querySelectorAll('.jupyter-widgets img'))
  .filter(i => i.offsetParent !== null && i.naturalWidth > 0 && i.clientHeight > 0)
  .filter(i => !['contain', 'cover', 'scale-down'].includes(getComputedStyle(i).objectFit))
  .filter(i => Math.abs(i.clientWidth / i.clientHeight - i.naturalWidth / i.naturalHeight)
               > 0.03 * i.naturalWidth / i.naturalHeight)
  .map(i => `${i.naturalWidth}x${i.naturalHeight} shown as ${i.clientWidth}x${i.clientHeight}`)
"""

# Elements that stick out past the right edge of a phone screen without a scrolling box to hold
# them (a code cell that scrolls sideways inside its box is fine; a page that does is not).
STICKING_OUT = """
() => {
  const edge = window.innerWidth + 1;
  const scrolls = (el) => {
    for (let a = el.parentElement; a; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if ((o === 'auto' || o === 'scroll') && a.getBoundingClientRect().right <= edge) return true;
    }
    return false;
  };
  const sel = 'main code, main table, main img, main pre, main .jupyter-widgets, main mjx-container';
  return Array.from(document.querySelectorAll(sel))
    .filter(el => el.offsetParent !== null && el.getBoundingClientRect().right > edge && !scrolls(el))
    .slice(0, 5)
    .map(el => el.tagName.toLowerCase() + '.' + (el.className && el.className.baseVal === undefined
         ? String(el.className).split(' ')[0] : '') + ': ' + (el.innerText || el.src || '').slice(0, 60));
}
"""

# Visible text of the page without the code cells' sources (a Markdown table in code is code).
PROSE_TEXT = """
() => {
  const copy = document.querySelector('main').cloneNode(true);
  copy.querySelectorAll('.cell_input, script, style').forEach(el => el.remove());
  return copy.innerText;
}
"""

# A Markdown table's delimiter row (|---|:--:|) left as text.  Rendered as a paragraph, its line
# breaks become spaces and smartquotes turn --- into an em dash, so look for two dash-only
# cells between pipes anywhere in the text.
RAW_TABLE_LINE = re.compile(r"\|(?:[ \t]*:?[-\u2013\u2014]+:?[ \t]*\|){2,}")


def test_page_html_stays_under_budget(built_site):
    assert built_site["returncode"] == 0, built_site["log"]
    too_big = {p: (built_site["html"] / f"{p}.html").stat().st_size for p in _pages()}
    too_big = {p: n for p, n in too_big.items() if n > PAGE_BUDGET}
    assert too_big == {}, f"pages over {PAGE_BUDGET:,} bytes of HTML: {too_big}"


@pytest.mark.parametrize("page_file", _pages())
def test_page_in_browser(page_file, browser, site_url, npm_assets):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    failed: list[str] = []
    blocked: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and errors.append(
        f"console error: {msg.text} (at {msg.location.get('url', '?')})"))
    page.on("requestfailed", lambda req: failed.append(f"{req.url} ({req.failure})"))
    page.on("response", lambda resp: resp.status >= 400 and failed.append(f"{resp.url} (HTTP {resp.status})"))
    _route(page, site_url, npm_assets, blocked)
    url = site_url + page_file + ".html"
    page.goto(url, wait_until="networkidle")
    nb = _notebook(page_file)

    if nb is not None and _has_widgets(nb):
        page.wait_for_selector(".jupyter-widgets", timeout=20000)
        page.wait_for_timeout(500)

    page.screenshot(path=str(ARTIFACTS / (page_file.replace("/", "_") + ".png")), full_page=True)
    if page.evaluate("() => document.querySelectorAll('.math').length") > 0:
        page.wait_for_selector("mjx-container", timeout=20000)  # MathJax typeset the formulas
    broken = page.evaluate("() => Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src.slice(0, 100))")
    assert broken == [], f"images that did not load: {broken}"

    if nb is not None:
        images = page.evaluate("() => document.querySelectorAll('.cell_output img').length")
        data = json.loads(nb.read_text())
        has_pictures = any("image/png" in o.get("data", {}) for c in data["cells"] for o in c.get("outputs", []))
        if has_pictures:
            assert images > 0, "the notebook has figures but the page shows none"
        colab = page.evaluate("() => Array.from(document.querySelectorAll('a')).map(a => a.href).filter(h => h.includes('colab.research.google.com'))")
        expected = f"https://colab.research.google.com/github/{REPO}/blob/main/{page_file}.ipynb"
        assert expected in colab, f"no Colab link to {expected}; found {colab}"

    text = page.evaluate("() => document.querySelector('main').innerText")
    markers = sorted(set(re.findall(r"NBVAL_\w+", text)))
    assert markers == [], f"test markers visible on {page_file}: {markers}"
    raw = [m.group(0) for m in RAW_TABLE_LINE.finditer(page.evaluate(PROSE_TEXT))]
    assert raw == [], f"raw Markdown table lines on {page_file}: {raw[:3]}"

    if nb is not None and _has_widgets(nb):
        rendered = page.evaluate("() => document.querySelectorAll('.jupyter-widgets .widget-image, .jupyter-widgets img, .jupyter-widgets .widget-html').length")
        assert rendered > 0, "the page's widgets did not render"
        *problems, tried = _controls_change_the_pictures(page)
        assert tried, "a widget page without a control to move"
        assert problems == [], f"widgets on {page_file}: " + "; ".join(problems)
        distorted = page.evaluate(DISTORTED)
        assert distorted == [], f"widget pictures out of proportion on {page_file}: {distorted[:3]}"

    page.set_viewport_size(PHONE)
    page.wait_for_timeout(500)
    widths = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    out = page.evaluate(STICKING_OUT)
    page.screenshot(path=str(ARTIFACTS / (page_file.replace("/", "_") + "-390px.png")), full_page=True)
    assert widths[0] <= widths[1], f"{page_file} scrolls sideways at 390 px ({widths[0]} px wide): {out}"
    assert out == [], f"{page_file} at 390 px: elements past the right edge: {out}"

    page.close()
    assert errors == [], f"JavaScript errors on {page_file}: {errors}"
    assert failed == [] and blocked == [], (
        f"failed requests on {page_file}: {failed}; requests to servers the page should not need: {blocked}")

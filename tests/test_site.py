"""The website, checked in a real browser, offline.

The built site is served on 127.0.0.1 and every page of the table of contents is opened in
headless Chromium (Debian's ``chromium``, driven by Playwright).  The JavaScript that the pages
load from CDNs (RequireJS, @jupyter-widgets/html-manager, MathJax) is served from copies fetched
from the npm registry, so the test needs no network beyond the package registries.  A
screenshot of every page is saved under ``test-artifacts/screenshots``.

Per page: no JavaScript errors, every image loaded, the "Open in Colab" link points at that
page's notebook, and for chapters with widgets: the explorers render and moving a slider changes
what is shown, with no kernel.
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


VISIBLE_OUTPUT_IMAGES = """
() => Array.from(document.querySelectorAll('.cell_output img, .jupyter-widgets img'))
        .filter(i => i.offsetParent !== null && i.getBoundingClientRect().width > 0)
        .map(i => i.src.slice(-120))
"""


def _controls_that_change_the_view(page, most: int = 8) -> tuple[int, int]:
    """Move each visible slider to its end and pick another entry in each menu; count how many
    of these moves change the visible images.  Controls that only work with a kernel (they say
    so on the page) change nothing here, so one working control per page is required."""
    changed = tried = 0
    controls = [("slider", h) for h in page.locator(".jupyter-widgets .noUi-handle").all()]
    controls += [("menu", m) for m in page.locator(".jupyter-widgets select").all()]
    for kind, control in controls[:most]:
        if not control.is_visible():
            continue
        control.scroll_into_view_if_needed()
        before = page.evaluate(VISIBLE_OUTPUT_IMAGES)
        if kind == "slider":
            control.focus()
            page.keyboard.press("End")
        else:
            options = control.locator("option").all()
            if len(options) < 2:
                continue
            current = control.input_value()
            other = next(o.get_attribute("value") for o in options if o.get_attribute("value") != current)
            control.select_option(other)
        page.wait_for_timeout(300)
        tried += 1
        changed += page.evaluate(VISIBLE_OUTPUT_IMAGES) != before
    return changed, tried


@pytest.mark.parametrize("page_file", _pages())
def test_page_in_browser(page_file, browser, site_url, npm_assets):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    blocked: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
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

    if nb is not None and _has_widgets(nb):
        rendered = page.evaluate("() => document.querySelectorAll('.jupyter-widgets .widget-image, .jupyter-widgets img, .jupyter-widgets .widget-html').length")
        assert rendered > 0, "the page's widgets did not render"
        changed, tried = _controls_that_change_the_view(page)
        assert tried, "a widget page without a slider or menu to move"
        assert changed, f"none of the {tried} controls changed what is shown"

    page.close()
    assert errors == [], f"JavaScript errors on {page_file}: {errors}"

"""The website, checked in a real browser, with no network.

The built site is served on 127.0.0.1 and every page of the table of contents is opened in
headless Chromium (Debian's ``chromium``, driven by Playwright), once 1280 px wide (a laptop) and
once 390 px wide (a phone).  The site serves its own JavaScript (RequireJS, the widget manager,
MathJax: ``book/_static/vendor``), so every request to another server is refused and fails the
test.  A screenshot of every page at both widths is saved under ``test-artifacts/screenshots``.

Per page and width, as a reader meets it:

* no request leaves the site, no JavaScript error, no console error, no failed request;
* every image loaded; a chapter shows its figures and links to its notebook in Colab;
* the formulas are typeset: every formula became MathJax output, none has a TeX error, and no
  raw TeX (``\\(...\\)``, ``$...$``) is left in the text;
* at 1280 px the column shows 76 characters of code, and no code cell or text output scrolls
  sideways; at 390 px code and outputs wrap inside their box, and nothing pushes the page wider
  than the screen;
* every saved widget view is drawn; every visible control of an explorer changes the picture
  with no kernel, and the explorer keeps its size and the control its place (no jumping); the
  widget pictures keep their proportions;
* no test scaffolding (``NBVAL_...``) and no raw Markdown table in the visible text;
* a chapter's checks show their verdict lines;
* the page's own HTML stays under 1.5 MB.

The verdict lines themselves (the markup ``unet_edu`` writes) are styled to read as verdicts in
both colour modes: :func:`test_verdict_lines_read_as_verdicts`.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
REPO = "unet-edu/unet-edu"

pytestmark = pytest.mark.browser

PAGE_BUDGET = 1_500_000  # bytes of a page's own HTML (figures and widget frames are inside it)
VIEWPORTS = {"1280px": {"width": 1280, "height": 900}, "390px": {"width": 390, "height": 844}}
CODE_COLUMN = 76  # characters a code line may have (tools.book checks the notebooks for it)


def _pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters") or []]
    return files


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
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


class _Watch:
    """What a page did that a reader's browser would hold against it."""

    def __init__(self):
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []


def _open(browser, site_url: str, page_file: str, viewport: dict, color_scheme="light"):
    """Open ``page_file`` at ``viewport`` with every request to another server refused."""
    context = browser.new_context(viewport=viewport, color_scheme=color_scheme)
    page = context.new_page()
    watch = _Watch()
    page.on("pageerror", lambda exc: watch.errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and watch.errors.append(
        f"console error: {msg.text} (at {msg.location.get('url', '?')})"))
    page.on("requestfailed", lambda req: req.url not in watch.external and watch.failed.append(
        f"{req.url} ({req.failure})"))
    page.on("response", lambda resp: resp.status >= 400 and watch.failed.append(
        f"{resp.url} (HTTP {resp.status})"))

    def route(r):
        url = r.request.url
        if url.startswith(site_url) or url.startswith("data:"):
            return r.continue_()
        watch.external.append(url)  # a CDN, a font service, analytics: the site must not need it
        return r.abort()

    context.route("**/*", route)
    page.goto(site_url + page_file + ".html", wait_until="networkidle")
    return page, watch


def _notebook(page_file: str) -> dict | None:
    nb = ROOT / f"{page_file}.ipynb"
    return json.loads(nb.read_text()) if nb.exists() else None


def _has_widgets(nb: dict) -> bool:
    return any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb["cells"] for o in c.get("outputs", []))


def _check_cells(nb: dict) -> int:
    return sum(c["cell_type"] == "code" and re.search(r"\bcheck_claim\s*\(", "".join(c["source"]))
               is not None for c in nb["cells"])


# Saved widget views not drawn: the html manager puts a .widget-subarea before each view's
# <script> and draws the view into it.
UNDRAWN_VIEWS = """
() => Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
  .filter(s => { const a = s.previousElementSibling;
                 return !(a && a.classList.contains('widget-subarea') && a.childElementCount > 0); })
  .length
"""

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

# The output cell that holds a control (the explorer as a reader sees it).
CELL_OF = "(el) => el.closest('.cell_output') || el.closest('.jupyter-widgets')"

# Where an element is on the page (document coordinates, so scrolling does not count).
BOX = """(el) => { const r = el.getBoundingClientRect();
  return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; }"""

# Sliders, menus, toggle buttons, buttons, check boxes and radio buttons: everything a reader
# can move or press.
CONTROLS = (".jupyter-widgets .noUi-handle, .jupyter-widgets select, "
            ".jupyter-widgets button.jupyter-button, .jupyter-widgets input[type=checkbox], "
            ".jupyter-widgets input[type=radio]")


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
        at_end = now == control.get_attribute("aria-valuemax")
        control.focus()
        page.keyboard.press("Home" if at_end else "End")
        return "slider -> start" if at_end else "slider -> end"
    if tag == "input":
        if control.get_attribute("type") == "radio" and control.is_checked():
            return None  # the chosen option: choosing another one is the move
        control.click()
        return f"{control.get_attribute('type')} box"
    classes = control.get_attribute("class") or ""
    if "widget-toggle-button" in classes and "mod-active" in classes:
        return None  # the toggle button already pressed: pressing another one is the move
    control.click()
    return f"button {control.inner_text()!r}"


def _controls_change_the_pictures(page) -> tuple[list[str], int]:
    """Move every visible control; return what went wrong (a control that changes no picture,
    an explorer that changes size, a control whose row moves away from under the pointer) and
    how many controls were tried."""
    problems, tried = [], 0
    for control in page.locator(CONTROLS).all():
        if not control.is_visible():
            continue
        control.scroll_into_view_if_needed()
        cell = control.evaluate_handle(CELL_OF).as_element()
        label = control.evaluate(
            "(el) => (el.closest('.widget-inline-hbox, .widget-toggle-buttons') || el)"
            ".innerText.split('\\n')[0].slice(0, 40)")
        # the control's row: a slider's handle moves along its track by design, its row must not
        row = control.evaluate_handle(
            "(el) => el.closest('.widget-inline-hbox, .widget-toggle-buttons, .widget-radio, "
            ".widget-checkbox') || el").as_element()
        before = cell.evaluate(SHOWN_PICTURES)
        box, where = cell.evaluate(BOX), row.evaluate(BOX)
        how = _move(page, control)
        if how is None:
            continue
        page.wait_for_timeout(400)
        tried += 1
        after = cell.evaluate(SHOWN_PICTURES)
        if (before or after) and after == before:
            problems.append(f"control {label!r} ({how}) did not change the picture")
        new_box, new_where = cell.evaluate(BOX), row.evaluate(BOX)
        if max(abs(a - b) for a, b in zip(box[2:], new_box[2:])) > 2:
            problems.append(f"control {label!r} ({how}) made the explorer jump: "
                            f"{box[2]:.0f}x{box[3]:.0f} -> {new_box[2]:.0f}x{new_box[3]:.0f} px")
        elif max(abs(a - b) for a, b in zip(where[:2], new_where[:2])) > 2:
            problems.append(f"control {label!r} ({how}) moved on the page: "
                            f"({where[0]:.0f}, {where[1]:.0f}) -> "
                            f"({new_where[0]:.0f}, {new_where[1]:.0f})")
    return problems, tried


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
# them (a table that scrolls sideways inside its box is fine; a page that does is not).
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

# The code blocks of the cells (sources and text outputs), each as the reader sees it: how it
# wraps, whether it scrolls sideways, its longest line.
CODE_BLOCKS = """
() => Array.from(document.querySelectorAll('main div.cell div.highlight > pre'))
  .filter(p => p.offsetParent !== null)
  .map(p => ({where: p.closest('.cell_output') ? 'output' : 'code',
              whiteSpace: getComputedStyle(p).whiteSpace,
              scrolls: p.scrollWidth > p.clientWidth + 1,
              longest: p.textContent.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '')}))
"""

# How many characters of code fit on one line of a code cell: a line of that many characters,
# set in the code block's own font, against the block's width less its padding.
CODE_COLUMN_FITS = """
(n) => {
  const pre = document.querySelector('main div.cell_input div.highlight > pre');
  if (!pre) return null;
  const style = getComputedStyle(pre);
  const probe = document.createElement('span');
  probe.textContent = 'M'.repeat(n);
  probe.style.font = style.font;
  probe.style.whiteSpace = 'pre';
  pre.appendChild(probe);
  const needed = probe.getBoundingClientRect().width;
  probe.remove();
  const room = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {needed, room, fontSize: style.fontSize};
}
"""

# Visible text of the page without the code cells' sources and outputs (a Markdown table or a
# dollar sign in code is code) and without typeset formulas.
PROSE_TEXT = """
() => {
  const copy = document.querySelector('main').cloneNode(true);
  copy.querySelectorAll('.cell_input, .cell_output pre, pre, script, style, mjx-container')
    .forEach(el => el.remove());
  return copy.innerText;
}
"""

# A Markdown table's delimiter row (|---|:--:|) left as text.  Rendered as a paragraph, its line
# breaks become spaces and smartquotes turn --- into an em dash, so look for two dash-only
# cells between pipes anywhere in the text.
RAW_TABLE_LINE = re.compile(r"\|(?:[ \t]*:?[-\u2013\u2014]+:?[ \t]*\|){2,}")
# TeX that MathJax should have typeset: \( \) \[ \] delimiters, $$, or $...$ holding a TeX
# command, a sub/superscript or a brace.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\n]{0,200}?[\\^_{}][^$\n]{0,200}?\$")

MATH_STATE = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const math = Array.from(document.querySelectorAll('main .math'));
  return {math: math.length,
          typeset: math.filter(m => m.querySelector('mjx-container')).length,
          errors: Array.from(document.querySelectorAll('mjx-merror'))
                    .map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 3)};
}
"""


def test_page_html_stays_under_budget(built_site):
    assert built_site["returncode"] == 0, built_site["log"]
    too_big = {p: (built_site["html"] / f"{p}.html").stat().st_size for p in _pages()}
    too_big = {p: n for p, n in too_big.items() if n > PAGE_BUDGET}
    assert too_big == {}, f"pages over {PAGE_BUDGET:,} bytes of HTML: {too_big}"


@pytest.mark.parametrize("width", list(VIEWPORTS))
@pytest.mark.parametrize("page_file", _pages())
def test_page_in_browser(page_file, width, browser, site_url):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page, watch = _open(browser, site_url, page_file, VIEWPORTS[width])
    nb = _notebook(page_file)
    widgets = nb is not None and _has_widgets(nb)
    if widgets:
        page.wait_for_selector(".jupyter-widgets", timeout=20000)
        page.wait_for_function(f"() => ({UNDRAWN_VIEWS})() === 0", timeout=20000)
    math = page.evaluate(MATH_STATE)
    page.wait_for_timeout(300)
    shot = ARTIFACTS / f"{page_file.replace('/', '_')}-{width}.png"
    page.screenshot(path=str(shot), full_page=True)

    # Nothing from another server, nothing broken.
    assert watch.external == [], f"{page_file} asked other servers for: {watch.external[:5]}"
    assert watch.errors == [], f"JavaScript errors on {page_file}: {watch.errors[:5]}"
    assert watch.failed == [], f"failed requests on {page_file}: {watch.failed[:5]}"
    broken = page.evaluate("() => Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src.slice(0, 100))")
    assert broken == [], f"images that did not load: {broken}"

    if nb is not None:
        images = page.evaluate("() => document.querySelectorAll('.cell_output img').length")
        has_pictures = any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
        if has_pictures:
            assert images > 0, "the notebook has figures but the page shows none"
        colab = page.evaluate("() => Array.from(document.querySelectorAll('a')).map(a => a.href).filter(h => h.includes('colab.research.google.com'))")
        expected = f"https://colab.research.google.com/github/{REPO}/blob/main/{page_file}.ipynb"
        assert expected in colab, f"no Colab link to {expected}; found {colab}"

    # Formulas typeset, no TeX left as text.
    assert math["typeset"] == math["math"], (
        f"{math['math'] - math['typeset']} of {math['math']} formulas on {page_file} not typeset")
    assert math["errors"] == [], f"TeX errors on {page_file}: {math['errors']}"
    prose = page.evaluate(PROSE_TEXT)
    raw_tex = [m.group(0)[:60] for m in RAW_TEX.finditer(prose)]
    assert raw_tex == [], f"raw TeX in the text of {page_file}: {raw_tex[:3]}"

    text = page.evaluate("() => document.querySelector('main').innerText")
    markers = sorted(set(re.findall(r"NBVAL_\w+", text)))
    assert markers == [], f"test markers visible on {page_file}: {markers}"
    raw = [m.group(0) for m in RAW_TABLE_LINE.finditer(prose)]
    assert raw == [], f"raw Markdown table lines on {page_file}: {raw[:3]}"

    # Code and outputs: a full code line fits at 1280 px; on a phone everything wraps.
    blocks = page.evaluate(CODE_BLOCKS)
    if width == "1280px":
        column = page.evaluate(CODE_COLUMN_FITS, CODE_COLUMN)
        if column is not None:
            assert column["needed"] <= column["room"], (
                f"{CODE_COLUMN} characters of code need {column['needed']:.0f} px at "
                f"{column['fontSize']}, the column has {column['room']:.0f} px")
        wide = [f"{b['where']} ({len(b['longest'])} characters): {b['longest'][:50]!r}..."
                for b in blocks if b["scrolls"]]
        assert wide == [], (f"{len(wide)} code block(s) on {page_file} scroll sideways at "
                            f"1280 px (lines over {CODE_COLUMN} characters): {wide[:4]}")
    else:
        unwrapped = [b["longest"][:40] for b in blocks
                     if b["whiteSpace"] not in ("pre-wrap", "break-spaces")]
        assert unwrapped == [], f"code that does not wrap on a phone on {page_file}: {unwrapped[:3]}"
        cut = [b["longest"][:40] for b in blocks if b["scrolls"]]
        assert cut == [], f"code cut off at 390 px on {page_file}: {cut[:3]}"
        widths = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
        out = page.evaluate(STICKING_OUT)
        assert widths[0] <= widths[1], f"{page_file} scrolls sideways at 390 px ({widths[0]} px wide): {out}"
        assert out == [], f"{page_file} at 390 px: elements past the right edge: {out}"

    # Explorers: drawn, live without a kernel, steady.
    if widgets:
        rendered = page.evaluate("() => document.querySelectorAll('.jupyter-widgets .widget-image, .jupyter-widgets img, .jupyter-widgets .widget-html').length")
        assert rendered > 0, "the page's widgets did not render"
        problems, tried = _controls_change_the_pictures(page)
        assert tried, "a widget page without a control to move"
        assert problems == [], f"widgets on {page_file} at {width}: " + "; ".join(problems)
        distorted = page.evaluate(DISTORTED)
        assert distorted == [], f"widget pictures out of proportion on {page_file}: {distorted[:3]}"
        assert watch.errors == [], f"JavaScript errors while moving the controls: {watch.errors[:5]}"

    # A chapter's checks show their verdicts (check_claim displays a <div class="unet-check">).
    if nb is not None and _check_cells(nb):
        verdicts = page.evaluate("() => document.querySelectorAll('main .unet-check').length")
        assert verdicts >= _check_cells(nb), (
            f"{page_file} has {_check_cells(nb)} check cells but shows {verdicts} verdict "
            f"line(s): execute the chapter again (python -m tools.book execute)")
    page.context.close()


# ---- The verdict lines --------------------------------------------------------------------------

# Contrast of an element's text against what is behind it (WCAG 2 formula), with translucent
# backgrounds blended over those beneath, up to the page's own.
CONTRAST = """
(el) => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const layers = [];
  for (let a = el; a; a = a.parentElement) {
    const bg = parse(getComputedStyle(a).backgroundColor);
    if (bg[3] > 0) layers.push(bg);
    if (bg[3] >= 1) break;
  }
  let back = [255, 255, 255, 1];
  for (const layer of layers.reverse()) back = over(layer, back);
  const fore = over(parse(getComputedStyle(el).color), back);
  const lum = (c) => { const v = c.slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
                       return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const [hi, lo] = [lum(fore), lum(back)].sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}
"""

LINE_SHAPE = """
(el) => { const s = getComputedStyle(el);
  return {height: el.getBoundingClientRect().height, lineHeight: parseFloat(s.lineHeight),
          fontFamily: s.fontFamily, border: s.borderLeftColor, borderWidth: s.borderLeftWidth,
          overflows: el.scrollWidth > el.clientWidth + 1,
          right: el.getBoundingClientRect().right, column: el.closest('.cell_output').getBoundingClientRect().right}; }
"""


def _verdict_markup() -> dict[str, str]:
    """The HTML the package writes for a check's verdict and an exercise checker's lines."""
    from unet_edu.claims import Check
    from unet_edu.exercises.feedback import Feedback

    lines = {"check": Check("the U-Net's test error is lower", "0.021 vs 0.034")._repr_html_(),
             "check-long": Check("from sigma = 0.5 up, one digit gives its noise level to within "
                                 "a few percent, and the blind network matches the told one",
                                 "relative error 0.031 ± 0.004 over 3 seeds, 200 digits each; "
                                 "ratio 1.02 ± 0.01")._repr_html_()}
    for status, text in [("todo", "fill in `crop` above, then run this cell again"),
                         ("pass", "your block matches DoubleConv"),
                         ("hint", "the output is 4 pixels too small: pad the convolutions"),
                         ("error", "`forward` raised TypeError in line 3 of your code")]:
        lines[status] = Feedback(status, text)._repr_html_()
    return lines


INSERT_LINES = """
(lines) => {
  const host = document.querySelector('main div.cell_output') || document.querySelector('main');
  const made = {};
  for (const [name, html] of Object.entries(lines)) {
    const out = document.createElement('div');
    out.className = 'output text_html';
    out.innerHTML = html;
    host.appendChild(out);
    made[name] = out.firstElementChild;
    made[name].id = 'verdict-' + name;
  }
  return Object.keys(made);
}
"""


@pytest.mark.parametrize("mode", ["light", "dark"])
def test_verdict_lines_read_as_verdicts(mode, browser, site_url):
    # The lines go into a chapter's first output, where check_claim's lines appear.
    chapter = next(p for p in _pages() if _notebook(p) is not None)
    lines = _verdict_markup()
    for width in VIEWPORTS:
        page, watch = _open(browser, site_url, chapter, VIEWPORTS[width], color_scheme=mode)
        page.evaluate(f"() => document.documentElement.setAttribute('data-theme', '{mode}')")
        page.evaluate(INSERT_LINES, lines)
        page.wait_for_timeout(200)
        code_font = page.evaluate("() => getComputedStyle(document.querySelector('main div.cell_input pre')).fontFamily")
        shapes = {name: page.locator(f"#verdict-{name}").evaluate(LINE_SHAPE) for name in lines}
        for name, shape in shapes.items():
            # a line of the text, not a block of printed output
            assert shape["fontFamily"] != code_font, f"{name} is set like printed output"
            assert float(shape["borderWidth"].rstrip("px")) >= 2, f"{name} has no coloured rule"
            assert not shape["overflows"] and shape["right"] <= shape["column"] + 1, \
                f"{name} runs past its column at {width}"
            for part in ("", " .unet-check-mark", " .unet-check-evidence", " .unet-exercise__mark",
                         " .unet-exercise__label"):
                target = page.locator(f"#verdict-{name}{part}")
                if target.count():
                    ratio = target.first.evaluate(CONTRAST)
                    assert ratio >= 4.5, (f"{name}{part or ' text'} in {mode} mode: contrast "
                                          f"{ratio:.2f}, below 4.5")
        if width == "1280px":
            # one line where it fits; a long verdict wraps instead of scrolling
            assert shapes["check"]["height"] < 1.9 * shapes["check"]["lineHeight"] + 16, shapes["check"]
            for status in ("todo", "pass", "hint", "error"):
                assert shapes[status]["height"] < 1.9 * shapes[status]["lineHeight"] + 16, status
            # four statuses, four colours; a check's verdict is a pass
            rules = {s: shapes[s]["border"] for s in ("todo", "pass", "hint", "error")}
            assert len(set(rules.values())) == 4, rules
            assert shapes["check"]["border"] == rules["pass"]
        assert watch.errors == [] and watch.external == []
        page.context.close()

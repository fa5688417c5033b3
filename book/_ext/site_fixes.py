"""Sphinx extension: five small fixes to the pages Jupyter Book 1.0.4 writes.

1. Repeated ``<script>`` entries are dropped.  The thebe configuration script
   (``const THEBE_JS_URL = ...``) is added to each page twice, and the second copy throws
   "Identifier 'THEBE_JS_URL' has already been declared" in the browser.
2. The widget library (ipywidgets 8's html-manager) typesets widget labels with the MathJax 2
   call ``MathJax.Hub.Queue``, but the site loads MathJax 3, which has no ``Hub``: every widget
   with a description would throw "Cannot read properties of undefined (reading 'Queue')".
   Right after the page's MathJax configuration we add a ``Hub.Queue`` that forwards to
   MathJax 3's ``typesetPromise``, and keep it on whatever object is later assigned to
   ``window.MathJax`` (MathJax 3 replaces the configuration object when it loads).
3. The widget library's icon fonts were fetched from the page's own folder.  html-manager's
   ``embed-amd.js`` is a named RequireJS module, and it loads its font files (Font Awesome, for
   the icons on buttons) from the folder RequireJS maps its name to: with no mapping that is
   ``<page folder>/@jupyter-widgets/html-manager/dist/``, so every chapter with a widget asked
   the site for six font files and got 404.  (It also reads
   ``window.__jupyter_widgets_assets_path__``, but only after it has injected its style sheets,
   too late for the fonts.)  The same holds for the other modules the script defines
   (``@jupyter-widgets/base``, ``/controls``, ``/html-manager``), whose icon fonts were asked
   for under ``<page folder>/@jupyter-widgets/``.  Just before the script we map each module
   name into the folder the script comes from, with RequireJS ``paths`` entries.
4. The references page labels its entries the way the text cites them.  The text cites
   author-year ("Ronneberger et al., 2015", ``bibtex_reference_style: author_year``), but
   pybtex's default labels in the list are alphabetic codes ("[RFB15]"), so a reader could not
   match a citation with its entry at a glance.  The bibliography style ``book_author_year``
   (``bibtex_default_style``) is pybtex's ``unsrt`` formatting with author-year labels, sorted
   by author and year.
5. The page style (``static/site_fixes.css``): code cells and their outputs that fit the column
   at 76 characters and wrap on a phone, tables that scroll inside their box, the one-line
   verdicts of the chapters' checks, widgets kept inside the column.
6. The site serves its own JavaScript.  RequireJS, the widget manager and MathJax are copied
   from pinned npm packages into ``book/_static/vendor`` (``python -m tools.vendor_js``), and
   ``_config.yml`` points ``nb_ipywidgets_js`` and ``mathjax_path`` at those copies; this
   extension adds the folder to the static files and stops the build when a configured copy
   is missing, so that no page asks another server for anything.
"""

import json
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearSorting
from sphinx.builders.html._assets import _JavaScript
from sphinx.errors import ExtensionError

MATHJAX2_BRIDGE = """(function () {
  function bridge(mj) {
    if (mj && typeof mj === "object" && !mj.Hub) {
      mj.Hub = { Queue: function (job) {
        var el = job && job[2];
        if (el && mj.typesetPromise) { mj.typesetPromise([el]).catch(function () {}); }
      } };
    }
    return mj;
  }
  var current = bridge(window.MathJax);
  Object.defineProperty(window, "MathJax", { configurable: true, enumerable: true,
    get: function () { return current; }, set: function (value) { current = bridge(value); } });
})();"""


VENDOR = Path(__file__).resolve().parents[1] / "_static" / "vendor"


def _widget_library_folder(js, pathto) -> str | None:
    """The folder of the html-manager ``embed-amd.js`` script ``js`` as the page addresses it
    (None for other scripts): a URL stays a URL, a file of the site becomes a path relative to
    the page, which is what RequireJS resolves a relative ``paths`` entry against."""
    src = str(getattr(js, "filename", None) or "").split("?")[0]
    if not src.endswith("/embed-amd.js"):
        return None
    folder = src.rsplit("/", 1)[0]
    return folder if "://" in folder else pathto(folder, resource=True)


def _requirejs_paths(folder: str) -> str:
    """A script that maps the widget library's module folder to ``folder`` for RequireJS, whether
    RequireJS has loaded yet (``requirejs.config``) or not (a global ``require`` object is the
    configuration RequireJS reads when it loads)."""
    # The bundle defines four named modules; each finds its fonts next to its own name.
    paths = {
        "@jupyter-widgets/base": f"{folder}/base",
        "@jupyter-widgets/controls": f"{folder}/controls",
        "@jupyter-widgets/html-manager": f"{folder}/html-manager",
        "@jupyter-widgets/html-manager/dist": folder,
    }
    config = json.dumps({"paths": paths})
    return ("(function () {\n"
            f"  var config = {config};\n"
            "  if (window.requirejs && window.requirejs.config) { window.requirejs.config(config); }\n"
            "  else { window.require = config; }\n"
            "})();")


def _key(js):
    # An inline script may come with filename None or "": treat both as the same.
    return (str(getattr(js, "filename", None) or ""), repr(sorted(getattr(js, "attributes", {}).items())))


def _fix_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, fixed = set(), []
    for js in scripts:
        key = _key(js)
        if key in seen:
            continue
        seen.add(key)
        folder = _widget_library_folder(js, context["pathto"])
        if folder is not None:
            fixed.append(_JavaScript("", body=_requirejs_paths(folder)))
        fixed.append(js)
        body = getattr(js, "attributes", {}).get("body", "")
        if body.startswith("window.MathJax ="):
            fixed.append(_JavaScript("", body=MATHJAX2_BRIDGE))
    scripts[:] = fixed


def _surname(person) -> str:
    """A person's last name(s) as printed, LaTeX accents decoded: "Çiçek", "He"."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


class AuthorYearLabels(BaseLabelStyle):
    """Labels as the text cites: "Ho and Salimans, 2022", "Ronneberger et al., 2015"; a letter
    after the year tells apart two entries that would otherwise share a label."""

    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_surname(p) for p in people]
            if len(names) > 2:
                who = f"{names[0]} et al."
            elif names:
                who = " and ".join(names)
            else:
                who = entry.fields.get("title", entry.key)
            labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
        for label in _disambiguated(labels):
            yield label


def _disambiguated(labels: list[str]) -> list[str]:
    counts = {label: labels.count(label) for label in labels}
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
        out.append(label)
    return out


class AuthorYearStyle(UnsrtStyle):
    """pybtex's ``unsrt`` entries, with author-year labels, sorted by author, year and title."""

    default_label_style = AuthorYearLabels
    default_sorting_style = AuthorYearSorting


def _local_scripts(config) -> list[str]:
    """The scripts the configuration asks the site itself to serve (paths under _static)."""
    wanted = [config.mathjax_path] + list(getattr(config, "nb_ipywidgets_js", {}) or {})
    return [p for p in wanted if p and "://" not in p and not p.startswith("/")]


def _add_static(app):
    # Added when the builder starts, so that the folders are copied with the theme's own files:
    # the page style, and the browser libraries (their contents land in _static/).
    app.config.html_static_path.append(str(Path(__file__).parent / "static"))
    app.config.html_static_path.append(str(VENDOR))
    missing = [p for p in _local_scripts(app.config) if not (VENDOR / p).is_file()]
    if missing:
        raise ExtensionError(
            f"scripts configured in _config.yml are not in {VENDOR}: {missing}; "
            "run `python -m tools.vendor_js` or correct the paths")


def setup(app):
    app.connect("builder-inited", _add_static)
    app.add_css_file("site_fixes.css")
    register_plugin("pybtex.style.labels", "book_author_year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "book_author_year", AuthorYearStyle)
    app.connect("html-page-context", _fix_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

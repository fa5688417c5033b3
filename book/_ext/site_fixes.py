"""Sphinx extension: two small fixes to the pages Jupyter Book 1.0.4 writes.

1. Repeated ``<script>`` entries are dropped.  The thebe configuration script
   (``const THEBE_JS_URL = ...``) is added to each page twice, and the second copy throws
   "Identifier 'THEBE_JS_URL' has already been declared" in the browser.
2. The widget library (ipywidgets 8's html-manager) typesets widget labels with the MathJax 2
   call ``MathJax.Hub.Queue``, but the site loads MathJax 3, which has no ``Hub``: every widget
   with a description would throw "Cannot read properties of undefined (reading 'Queue')".
   Right after the page's MathJax configuration we add a ``Hub.Queue`` that forwards to
   MathJax 3's ``typesetPromise``, and keep it on whatever object is later assigned to
   ``window.MathJax`` (MathJax 3 replaces the configuration object when it loads).
"""

from sphinx.builders.html._assets import _JavaScript

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
        fixed.append(js)
        body = getattr(js, "attributes", {}).get("body", "")
        if body.startswith("window.MathJax ="):
            fixed.append(_JavaScript("", body=MATHJAX2_BRIDGE))
    scripts[:] = fixed


def setup(app):
    app.connect("html-page-context", _fix_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

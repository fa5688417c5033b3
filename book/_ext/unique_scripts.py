"""Sphinx extension: drop repeated <script> entries from every page.

With Jupyter Book 1.0.4 the thebe configuration script (``const THEBE_JS_URL = ...``) is added
to each page twice, and the second copy throws "Identifier 'THEBE_JS_URL' has already been
declared" in the browser.  Keeping the first of any identical script entries fixes that.
"""


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # An inline script may come with filename None or "": treat both as the same.
        key = (str(getattr(js, "filename", None) or ""), repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

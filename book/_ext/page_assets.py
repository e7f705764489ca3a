"""Sphinx extension: each page loads each script and style sheet once.

Sphinx 7.4 adds an inline script registered after the builder starts (sphinx-togglebutton's
selector, sphinx-thebe's configuration) to a page twice: once as it is registered (file name
``None``) and again when the builder collects late assets (file name ``""``), so the two copies
do not compare equal. The second ``const THEBE_JS_URL`` then throws "Identifier has already been
declared" in every reader's console. This keeps the first copy of each asset on every page.
"""

from __future__ import annotations


def _key(asset) -> tuple:
    filename = getattr(asset, "filename", asset) or ""
    attributes = getattr(asset, "attributes", {})
    return (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _drop_repeats(app, pagename, templatename, context, doctree) -> None:
    for name in ("script_files", "css_files"):
        assets = context.get(name)
        if not isinstance(assets, list):
            continue
        seen, kept = set(), []
        for asset in assets:
            key = _key(asset)
            if key not in seen:
                seen.add(key)
                kept.append(asset)
        assets[:] = kept


def setup(app):
    # Late, so that assets added for one page by other extensions are seen too.
    app.connect("html-page-context", _drop_repeats, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

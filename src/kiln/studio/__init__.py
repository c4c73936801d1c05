"""Kiln Studio: the web console over a workspace (models, endpoints, monitors, pipelines, features, edge).

Each page's data is a typed, read-only result built by a module named for the page from the library's own readers;
the web app renders those results with templates. The data modules import no web framework and no engine they can do
without, and each bounds what it reads so a page answers quickly on a large workspace.
"""

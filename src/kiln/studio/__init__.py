"""Kiln Studio: one web console for the whole lifecycle (models, endpoints, monitors, pipelines, features, edge).

Each page's data is a typed result built by a module named for the page from the library's own readers; the web
app (kiln.studio.app) renders them with templates and serves every asset itself. Actions (approve, promote, roll back,
pause a rollout) call the same library functions as the CLI and need the bearer token named by settings.
"""

"""Pipeline steps and runs: what each KFP component calls, and how pipelines are found, compiled, run and submitted.

Nothing here imports the ``components`` or ``pipelines`` packages: pipelines are loaded by name or file path.
"""

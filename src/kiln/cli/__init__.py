"""The `kiln` command-line interface."""

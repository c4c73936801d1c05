"""Runs Feast's own `feast serve` with the long-lived heap frozen, for steady tail latency.

Usage (what `kiln up` runs): python -m kiln.stack.feast_serve -c REPO serve -h HOST -p PORT ...
"""

from __future__ import annotations

import gc
import sys


def main() -> int:
    # Importing Feast's server leaves ~200k objects that live as long as the process; every full
    # collection walks them all (~130 ms on these machines) and stalls whatever request is in flight.
    # Freezing them after import, before Gunicorn forks its worker, takes them out of collection.
    import feast.feature_server  # noqa: F401 - imported for its weight, before the freeze
    from feast.cli.cli import cli

    gc.collect()
    gc.freeze()
    return cli.main(args=sys.argv[1:], prog_name="feast", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())

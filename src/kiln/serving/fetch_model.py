"""Copy a model's files from where a cluster keeps them (an s3:// prefix, or a folder) to a local folder: what KServe's
storage initializer does for an InferenceService, for the pods of Kiln's own that serve a model (an asynchronous
endpoint's workers), as their init container.

    python -m kiln.serving.fetch_model --source s3://BUCKET/PREFIX --to /mnt/models
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiln.errors import InputError, KilnError
from kiln.storage import open_store


def fetch(source: str, target: Path) -> int:
    """Every object under ``source`` into ``target``, keeping their relative paths; how many there were."""
    store = open_store(source)
    keys = store.list_keys("")
    if not keys:
        raise InputError(f"{source}: no model files there")
    for key in keys:
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, path)
    return len(keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Copy a model's files to a local folder")
    parser.add_argument("--source", required=True)
    parser.add_argument("--to", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        count = fetch(args.source, args.to)
    except KilnError as exc:
        sys.exit(f"error: {exc.message}")
    print(f"{count} files from {args.source} in {args.to}")


if __name__ == "__main__":
    main()

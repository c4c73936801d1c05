"""Generating and validating churn data at scale, against simply reading the same tables.

Run: .venv/bin/python benchmarks/data_validation.py [--customers N] [--days D] [--json]
Reference for validation: pandas reading the same parquet tables (the floor any check pays).
Reference for generation: writing the same tables with pyarrow (the floor of producing them).
"""

from __future__ import annotations

import resource
import tempfile
import time
from datetime import date
from pathlib import Path

from _report import Figure, parser, report


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=20000)
    p.add_argument("--days", type=int, default=120)
    args = p.parse_args()

    import pandas as pd

    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA
    from kiln.data.validate import validate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "churn"
        t0 = time.perf_counter()
        with staged_dataset(out, overwrite=False) as stage:
            frames, stats = generate_churn(GenerateOptions(customers=args.customers, days=args.days, seed=1,
                                                           end=date(2026, 10, 1)))
            t_gen = time.perf_counter() - t0
            t1 = time.perf_counter()
            write_dataset(stage, "churn", CHURN_SCHEMA, frames, {}, stats)
            t_write = time.perf_counter() - t1
        rows = sum(len(f) for f in frames.values())

        t0 = time.perf_counter()
        for name in ("entities", "events", "labels"):
            pd.read_parquet(out / f"{name}.parquet")
        t_read = time.perf_counter() - t0

        t0 = time.perf_counter()
        validate_dataset(out)
        t_validate = time.perf_counter() - t0

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = [
        Figure("generate (simulate)", t_gen, "s", t_write, "writing the tables with pyarrow"),
        Figure("validate", t_validate, "s", t_read, "reading the tables with pandas"),
        Figure("validate throughput", rows / t_validate / 1e6, "M rows/s", rows / t_read / 1e6,
               "pandas read throughput"),
    ]
    report("Churn data: generation and validation", figures, args.json,
           {"customers": args.customers, "days": args.days, "rows": rows, "events": stats["events"],
            "peak memory (MB)": round(peak_mb)})


if __name__ == "__main__":
    main()

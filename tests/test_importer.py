"""`kiln data import`: a Telco-churn-shaped CSV becomes a valid Kiln dataset, or fails cleanly.

The CSV is built here, shaped like the public IBM Telco customer-churn export (including its
TotalCharges cells that hold a single space). Most checks call the Python functions; a few
run the real `kiln` console script end to end, and the error cases also run the CLI's entry
point in-process (same code path as the console script, without a process start per case).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kiln.data.dataset import open_dataset
from kiln.data.importer import ImportOptions, import_csv, import_dataset, snake_case
from kiln.data.validate import validate_dataset
from kiln.errors import DatasetError, InputError
from tests.conftest import Result, run_kiln

AS_OF = "2026-01-15"

HEADER = ["customerID", "gender", "SeniorCitizen", "Partner", "tenure", "Contract", "PaymentMethod",
          "MonthlyCharges", "TotalCharges", "Churn"]
CONTRACTS = ["Month-to-month", "One year", "Two year"]
PAYMENTS = ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"]
N_ROWS = 40
BLANK_TOTAL = {6, 17, 29}  # rows (0-based) with tenure 0 and TotalCharges " ", as in the real export


# --- building the CSV --------------------------------------------------------------------------
def telco_rows(n: int = N_ROWS) -> list[dict[str, str]]:
    """Deterministic Telco-shaped rows (customerID like '7590-VHVEG')."""
    rows = []
    for i in range(n):
        letters = "".join(chr(65 + (i * 7 + k * 11) % 26) for k in range(5))
        tenure = 0 if i in BLANK_TOTAL else 1 + (i * 17) % 72
        monthly = 18.25 + (i * 23.45) % 100
        rows.append({
            "customerID": f"{7590 + 37 * i:04d}-{letters}",
            "gender": "Female" if i % 2 == 0 else "Male",
            "SeniorCitizen": "1" if i % 6 == 0 else "0",
            "Partner": "Yes" if i % 3 == 0 else "No",
            "tenure": str(tenure),
            "Contract": CONTRACTS[i % 3],
            "PaymentMethod": PAYMENTS[i % 4],
            "MonthlyCharges": f"{monthly:.2f}",
            "TotalCharges": " " if tenure == 0 else f"{monthly * tenure:.2f}",
            "Churn": "Yes" if i % 4 == 1 else "No",
        })
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    header = header or list(rows[0])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def with_snapshot_dates(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Add a SnapshotDate column: row i is dated 2025-MM-DD, all distinct, all in the past."""
    out = []
    for i, row in enumerate(rows):
        out.append({**row, "SnapshotDate": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"})
    return out


# --- helpers ------------------------------------------------------------------------------------
@pytest.fixture
def kiln_inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """The console script's entry point, main(), run in this process: exit code, stdout, stderr."""
    from kiln.cli.main import main

    def run(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["kiln", *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main()
        captured = capsys.readouterr()
        code = exc.value.code
        return Result(code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err)

    return run


def leftovers(out: Path) -> list[str]:
    """Hidden staging folders (.NAME.tmp-*, .NAME.old-*) beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def import_to(out: Path, opts: ImportOptions, overwrite: bool = False) -> Path:
    """The Python API `kiln data import` calls."""
    imported = import_dataset(opts, out, overwrite=overwrite)
    assert imported.path == out.resolve()
    return out


@pytest.fixture
def telco_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "telco.csv", telco_rows())


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Telco CSV imported once through the Python API, with --as-of."""
    root = tmp_path_factory.mktemp("imported")
    rows = telco_rows()
    path = write_csv(root / "WA_Fn-UseC_-Telco-Customer-Churn.csv", rows)
    out = import_to(root / "telco", ImportOptions(csv=path, entity="customerID", label="Churn",
                                                  as_of=date.fromisoformat(AS_OF)))
    ds = open_dataset(out)
    return {"rows": rows, "out": out, "dataset": ds, "entities": ds.read("entities"), "labels": ds.read("labels")}


# --- snake_case -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [
    ("customerID", "customer_id"),
    ("MonthlyCharges", "monthly_charges"),
    ("Monthly Charges", "monthly_charges"),
    ("SeniorCitizen", "senior_citizen"),
    ("tenure", "tenure"),
    ("PaymentMethod", "payment_method"),
])
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_snake_case_of_a_name_starting_with_a_digit_is_prefixed() -> None:
    result = snake_case("2ndLine")
    assert result.startswith("c_")
    assert "2nd" in result and "line" in result
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", result)  # a name every engine downstream accepts


# --- end to end through the console script ---------------------------------------------------------
def test_cli_import_json_then_validate(telco_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    res = run_kiln("data", "import", telco_csv, "--entity", "customerID", "--label", "Churn",
                   "--as-of", AS_OF, "--out", out, "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)  # the whole of stdout is one JSON document
    assert doc["entity"] == "customer_id"
    assert doc["label"] == "churn"
    assert doc["label_mapping"] == {"Yes": 1, "No": 0}
    assert doc["rows"] == N_ROWS
    assert set(doc["protected"]) == {"gender", "senior_citizen"}
    cols = doc["columns"]
    assert cols["customer_id"] == "string"
    assert cols["senior_citizen"] == "int64 [0, 1]"
    assert cols["tenure"] == "int64"
    assert cols["monthly_charges"] == "float64"
    assert cols["total_charges"] == "float64"
    assert cols["contract"] == "string ['Month-to-month', 'One year', 'Two year']"
    assert "customerID" not in cols and "MonthlyCharges" not in cols
    assert (out / "dataset.json").is_file()
    assert leftovers(out) == []

    res = run_kiln("data", "validate", out)
    assert res.code == 0, res.stderr
    assert "valid" in res.stdout


def test_cli_unknown_entity_fails_cleanly(telco_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    res = run_kiln("data", "import", telco_csv, "--entity", "CustomerNumber", "--label", "Churn",
                   "--as-of", AS_OF, "--out", out)
    assert res.code == 1
    assert "CustomerNumber" in res.stderr
    assert "--entity" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not out.exists()
    assert leftovers(out) == []


def test_cli_existing_dataset_needs_overwrite(telco_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    import_to(out, ImportOptions(csv=telco_csv, entity="customerID", label="Churn", as_of=date.fromisoformat(AS_OF)))
    before = (out / "dataset.json").read_bytes()

    res = run_kiln("data", "import", telco_csv, "--entity", "customerID", "--label", "Churn",
                   "--as-of", "2026-02-01", "--out", out)
    assert res.code == 1
    assert "--overwrite" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert (out / "dataset.json").read_bytes() == before
    assert leftovers(out) == []

    res = run_kiln("data", "import", telco_csv, "--entity", "customerID", "--label", "Churn",
                   "--as-of", "2026-02-01", "--out", out, "--overwrite")
    assert res.code == 0, res.stderr
    after = (out / "dataset.json").read_bytes()
    assert after != before
    assert json.loads(after)["source"]["as_of"] == "2026-02-01"
    labels = open_dataset(out).read("labels")
    assert (labels["label_timestamp"] == pd.Timestamp("2026-02-01", tz="UTC")).all()
    assert leftovers(out) == []


# --- inferred types (Python API) -------------------------------------------------------------------
def test_column_names_are_snake_cased(imported: dict[str, Any]) -> None:
    cols = [c.name for c in imported["dataset"].schema.table("entities").columns]
    assert cols == ["customer_id", "event_timestamp", "gender", "senior_citizen", "partner", "tenure", "contract",
                    "payment_method", "monthly_charges", "total_charges"]
    assert list(imported["entities"].columns) == cols
    assert list(imported["labels"].columns) == ["customer_id", "label_timestamp", "churn"]


def test_inferred_types(imported: dict[str, Any]) -> None:
    schema = imported["dataset"].schema
    table = schema.table("entities")
    assert schema.entity == "customer_id"
    assert schema.label == "churn"

    key = table.column("customer_id")
    assert (key.dtype, key.role) == ("string", "key")
    assert table.key == ["customer_id"]

    senior = table.column("senior_citizen")
    assert (senior.dtype, senior.role, senior.categories) == ("int64", "protected", [0, 1])
    gender = table.column("gender")
    assert (gender.dtype, gender.role) == ("string", "protected")
    assert gender.categories == ["Female", "Male"]

    assert table.column("monthly_charges").dtype == "float64"
    assert table.column("total_charges").dtype == "float64"
    assert table.column("tenure").dtype == "int64"
    assert table.column("partner").role == "feature"

    contract = table.column("contract")
    assert contract.dtype == "string"
    observed = sorted({r["Contract"] for r in imported["rows"]})
    assert contract.categories == observed == CONTRACTS
    assert sorted(table.column("payment_method").categories) == sorted(PAYMENTS)

    entities = imported["entities"]
    assert entities["customer_id"].tolist() == [r["customerID"] for r in imported["rows"]]
    expected_monthly = [float(r["MonthlyCharges"]) for r in imported["rows"]]
    assert entities["monthly_charges"].tolist() == pytest.approx(expected_monthly)
    assert entities["senior_citizen"].tolist() == [int(r["SeniorCitizen"]) for r in imported["rows"]]


def test_blank_total_charges_become_nulls(imported: dict[str, Any]) -> None:
    total = imported["entities"]["total_charges"]
    assert set(total.index[total.isna()]) == BLANK_TOTAL
    for i, row in enumerate(imported["rows"]):
        if i not in BLANK_TOTAL:
            assert total.iloc[i] == pytest.approx(float(row["TotalCharges"]))
    assert imported["dataset"].schema.table("entities").column("total_charges").nullable


def test_label_is_mapped_yes_to_1_no_to_0(imported: dict[str, Any]) -> None:
    manifest = imported["dataset"].manifest
    assert manifest["source"]["label_mapping"] == {"Yes": 1, "No": 0}
    labels = imported["labels"]
    assert labels["churn"].tolist() == [1 if r["Churn"] == "Yes" else 0 for r in imported["rows"]]
    assert labels["customer_id"].tolist() == [r["customerID"] for r in imported["rows"]]
    assert imported["dataset"].schema.table("labels").column("churn").categories == [0, 1]


def test_labels_are_stamped_with_as_of(imported: dict[str, Any]) -> None:
    stamp = pd.Timestamp(AS_OF, tz="UTC")
    assert len(imported["labels"]) == N_ROWS
    assert (imported["labels"]["label_timestamp"] == stamp).all()
    assert (imported["entities"]["event_timestamp"] == stamp).all()
    assert imported["dataset"].manifest["source"]["as_of"] == AS_OF


def test_imported_dataset_validates(imported: dict[str, Any]) -> None:
    report = validate_dataset(imported["out"])
    assert report.tables == {"entities": N_ROWS, "labels": N_ROWS}
    assert report.content_hash_matches_manifest


def test_timestamp_column_gives_each_row_its_time(tmp_path: Path) -> None:
    rows = with_snapshot_dates(telco_rows())
    # The same customer seen again at a later snapshot: allowed, because the key is (id, time).
    rows.append({**rows[0], "SnapshotDate": "2025-12-31", "Churn": "Yes"})
    path = write_csv(tmp_path / "snapshots.csv", rows)
    out = import_to(tmp_path / "ds", ImportOptions(csv=path, entity="customerID", label="Churn",
                                                   timestamp="SnapshotDate"))
    ds = open_dataset(out)
    labels, entities = ds.read("labels"), ds.read("entities")
    expected = [pd.Timestamp(r["SnapshotDate"], tz="UTC") for r in rows]
    assert labels["label_timestamp"].tolist() == expected
    assert entities["event_timestamp"].tolist() == expected
    assert labels["churn"].tolist() == [1 if r["Churn"] == "Yes" else 0 for r in rows]
    assert "snapshot_date" not in entities.columns  # the time column is the timestamp, not a feature
    assert ds.schema.table("entities").key == ["customer_id", "event_timestamp"]
    assert ds.manifest["source"]["as_of"] is None
    validate_dataset(out)


def test_positive_flag_resolves_a_label_that_is_not_obvious(tmp_path: Path) -> None:
    rows = telco_rows()
    for r in rows:
        r["Churn"] = "A" if r["Churn"] == "Yes" else "B"
    path = write_csv(tmp_path / "ab.csv", rows)
    with pytest.raises(InputError, match="--positive"):
        import_csv(ImportOptions(csv=path, entity="customerID", label="Churn", as_of=date.fromisoformat(AS_OF)))
    out = import_to(tmp_path / "ds", ImportOptions(csv=path, entity="customerID", label="Churn",
                                                   as_of=date.fromisoformat(AS_OF), positive="A"))
    ds = open_dataset(out)
    assert ds.manifest["source"]["label_mapping"] == {"A": 1, "B": 0}
    assert ds.read("labels")["churn"].tolist() == [1 if r["Churn"] == "A" else 0 for r in rows]
    validate_dataset(out)


# --- errors: each names the problem and writes nothing ----------------------------------------------
FUTURE = (date.today() + timedelta(days=400)).isoformat()


def _dup_id(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    rows[7]["customerID"] = rows[2]["customerID"]  # data rows 3 and 8: CSV lines 4 and 9
    return rows


def _one_label(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    for r in rows:
        r["Churn"] = "No"
    return rows


def _ab_labels(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    for r in rows:
        r["Churn"] = "A" if r["Churn"] == "Yes" else "B"
    return rows


def _empty_id(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    rows[10]["customerID"] = ""  # CSV line 12
    return rows


def _bad_date(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    rows = with_snapshot_dates(rows)
    rows[4]["SnapshotDate"] = "not-a-date"  # CSV line 6
    return rows


def _future_date(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    rows = with_snapshot_dates(rows)
    rows[9]["SnapshotDate"] = FUTURE  # CSV line 11
    return rows


@dataclass
class Case:
    id: str
    mutate: Any = None  # rows -> rows; None leaves the CSV as built
    entity: str = "customerID"
    label: str = "Churn"
    timestamp: str | None = None
    as_of: str | None = AS_OF
    missing_csv: bool = False
    expect: tuple[str, ...] = ()  # substrings the message must hold
    pattern: str | None = None  # a regex the message must match


ERROR_CASES = [
    Case("unknown-entity", entity="CustomerNumber", expect=("--entity", "CustomerNumber")),
    Case("duplicate-ids", _dup_id, expect=("customerID", "not unique"), pattern=r"\b4\b.*\b9\b"),
    Case("one-label-value", _one_label, expect=("Churn", "at least two classes")),
    Case("ambiguous-label", _ab_labels, expect=("Churn", "--positive")),
    Case("empty-entity-cell", _empty_id, expect=("customerID", "empty"), pattern=r"\b12\b"),
    Case("unparsable-timestamp", _bad_date, timestamp="SnapshotDate", as_of=None,
         expect=("SnapshotDate", "not-a-date"), pattern=r"\b6\b"),
    Case("future-timestamp", _future_date, timestamp="SnapshotDate", as_of=None,
         expect=("SnapshotDate", "future"), pattern=r"\b11\b"),
    Case("future-as-of", as_of=FUTURE, expect=("--as-of", FUTURE, "future")),
    Case("timestamp-and-as-of", with_snapshot_dates, timestamp="SnapshotDate", as_of=AS_OF,
         expect=("--timestamp", "--as-of")),
    Case("missing-csv", missing_csv=True, expect=("no-such-export.csv",)),
]


def _case_csv(case: Case, folder: Path) -> Path:
    if case.missing_csv:
        return folder / "no-such-export.csv"
    rows = telco_rows()
    if case.mutate is not None:
        rows = case.mutate(rows)
    return write_csv(folder / "telco.csv", rows)


def _check_message(case: Case, message: str) -> None:
    for text in case.expect:
        assert text in message, f"{text!r} not in {message!r}"
    if case.pattern:
        assert re.search(case.pattern, message), f"{case.pattern!r} not found in {message!r}"


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.id)
def test_import_error_python_api(case: Case, tmp_path: Path) -> None:
    path = _case_csv(case, tmp_path)
    out = tmp_path / "out" / "ds"
    out.parent.mkdir()
    opts = ImportOptions(csv=path, entity=case.entity, label=case.label, timestamp=case.timestamp,
                         as_of=date.fromisoformat(case.as_of) if case.as_of else None)
    with pytest.raises(InputError) as exc:
        import_to(out, opts)
    assert exc.value.exit_code == 1
    _check_message(case, str(exc.value))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.id)
def test_import_error_cli(case: Case, tmp_path: Path, kiln_inproc) -> None:
    path = _case_csv(case, tmp_path)
    out = tmp_path / "out" / "ds"
    out.parent.mkdir()
    args = ["data", "import", path, "--entity", case.entity, "--label", case.label, "--out", out]
    if case.timestamp:
        args += ["--timestamp", case.timestamp]
    if case.as_of:
        args += ["--as-of", case.as_of]
    res = kiln_inproc(*args)
    assert res.code == 1, (res.stdout, res.stderr)
    _check_message(case, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    assert res.stdout == ""
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_cli_positive_flag_makes_ambiguous_label_import(tmp_path: Path, kiln_inproc) -> None:
    path = write_csv(tmp_path / "ab.csv", _ab_labels(telco_rows()))
    out = tmp_path / "ds"
    res = kiln_inproc("data", "import", path, "--entity", "customerID", "--label", "Churn", "--as-of", AS_OF,
                      "--out", out, "--positive", "A", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["label_mapping"] == {"A": 1, "B": 0}
    assert (out / "dataset.json").is_file()


def test_existing_dataset_without_overwrite_is_a_dataset_error(telco_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    opts = ImportOptions(csv=telco_csv, entity="customerID", label="Churn", as_of=date.fromisoformat(AS_OF))
    import_to(out, opts)
    before = (out / "dataset.json").read_bytes()
    with pytest.raises(DatasetError, match="--overwrite"):
        import_to(out, ImportOptions(csv=telco_csv, entity="customerID", label="Churn",
                                     as_of=date(2026, 2, 1)))
    assert (out / "dataset.json").read_bytes() == before
    assert leftovers(out) == []


def test_failed_import_with_overwrite_keeps_the_old_dataset(telco_csv: Path, tmp_path: Path, kiln_inproc) -> None:
    out = tmp_path / "ds"
    import_to(out, ImportOptions(csv=telco_csv, entity="customerID", label="Churn", as_of=date.fromisoformat(AS_OF)))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write_csv(tmp_path / "bad.csv", _one_label(telco_rows()))
    res = kiln_inproc("data", "import", bad, "--entity", "customerID", "--label", "Churn", "--as-of", AS_OF,
                      "--out", out, "--overwrite")
    assert res.code == 1
    assert "Churn" in res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(out) == []
    validate_dataset(out)


def test_zero_padded_entity_ids_stay_distinct(tmp_path: Path) -> None:
    rows = telco_rows(6)
    for i, cid in enumerate(["007", "7", "0042", "42", "0100", "100"]):
        rows[i]["customerID"] = cid
    path = write_csv(tmp_path / "ids.csv", rows)
    _, frames, _, _ = import_csv(ImportOptions(csv=path, entity="customerID", label="Churn",
                                               as_of=date.fromisoformat(AS_OF)))
    assert [str(v) for v in frames["entities"]["customer_id"]] == ["007", "7", "0042", "42", "0100", "100"]

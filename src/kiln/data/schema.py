"""Dataset schemas: the tables of a dataset, their columns, types and rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kiln.data.task import BINARY_01, Task, TaskKind

DType = Literal["int64", "float64", "string", "timestamp"]
Role = Literal["key", "timestamp", "feature", "protected", "label"]
TableRole = Literal["entities", "events", "labels"]


class ColumnSpec(BaseModel):
    """One column: its type, whether it may be null, and the values it may hold."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: DType
    role: Role = "feature"
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | list[int] | None = None
    description: str = ""


class TableSpec(BaseModel):
    """One table (one parquet file) of a dataset."""

    model_config = ConfigDict(extra="forbid")

    name: TableRole
    columns: list[ColumnSpec]
    key: list[str] = Field(description="Columns unique together; none of them may be null.")
    timestamp: str | None = Field(None, description="The time column; no value may lie in the future.")
    references: dict[str, TableRole] = Field(
        default_factory=dict, description="column -> table whose entity key each value must exist in"
    )

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


class DatasetSchema(BaseModel):
    """The tables of a dataset and the names of its entity key and label."""

    model_config = ConfigDict(extra="forbid")

    name: str
    entity: str
    label: str
    task: TaskKind = Field("binary", description="What the label asks for: binary, multiclass or regression.")
    favourable: str | None = Field(None, description="The favourable outcome bias is measured by: classes 'A,B', or "
                                                     "'>X' / '<X' for regression; binary: its positive class.")
    tables: list[TableSpec]

    def learning_task(self) -> Task:
        """The task with its classes (a classification label's categories, in order)."""
        if self.task == "regression":
            return Task("regression").with_favourable(self.favourable, "favourable")
        label = self.table("labels").column(self.label) if self.has_table("labels") else None
        classes = tuple(label.categories) if label is not None and label.categories else ()
        task = BINARY_01 if self.task == "binary" and not classes else Task(self.task, classes)
        return task.with_favourable(self.favourable, "favourable")

    def table(self, name: str) -> TableSpec:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def has_table(self, name: str) -> bool:
        return any(t.name == name for t in self.tables)

    def protected(self) -> list[str]:
        """Protected attributes (facets for bias analysis)."""
        return [c.name for t in self.tables for c in t.columns if c.role == "protected"]


# --- The churn demo -------------------------------------------------------------------------
CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENT_METHODS = ["electronic-check", "mailed-check", "bank-transfer", "credit-card"]
PLANS = ["basic", "standard", "premium"]
GENDERS = ["female", "male"]
EVENT_FEATURES = ["usage_minutes", "data_gb", "support_calls", "payment_delay_days", "dropped_calls"]


def _feature(name: str, dtype: DType, lo: float | None = None, hi: float | None = None, **kw: object) -> ColumnSpec:
    return ColumnSpec(name=name, dtype=dtype, nullable=True, min=lo, max=hi, **kw)


CHURN_SCHEMA = DatasetSchema(
    name="churn",
    entity="customer_id",
    label="churned",
    tables=[
        TableSpec(
            name="entities",
            key=["customer_id"],
            timestamp="signup_date",
            columns=[
                ColumnSpec(name="customer_id", dtype="int64", role="key", min=1, description="customer"),
                ColumnSpec(name="signup_date", dtype="timestamp", role="timestamp", description="first day of service"),
                _feature("contract", "string", categories=CONTRACTS),
                _feature("payment_method", "string", categories=PAYMENT_METHODS),
                _feature("plan", "string", categories=PLANS),
                _feature("monthly_charges", "float64", 0, 1000, description="USD per month"),
                ColumnSpec(name="gender", dtype="string", role="protected", nullable=True, categories=GENDERS),
                ColumnSpec(name="senior_citizen", dtype="int64", role="protected", nullable=True, categories=[0, 1]),
            ],
        ),
        TableSpec(
            name="events",
            key=["customer_id", "event_timestamp"],
            timestamp="event_timestamp",
            references={"customer_id": "entities"},
            columns=[
                ColumnSpec(name="customer_id", dtype="int64", role="key", min=1),
                ColumnSpec(name="event_timestamp", dtype="timestamp", role="timestamp"),
                _feature("usage_minutes", "float64", 0, 1440, description="minutes of calls that day"),
                _feature("data_gb", "float64", 0, 1000, description="mobile data used that day"),
                _feature("support_calls", "int64", 0, 100, description="calls to customer support that day"),
                _feature("payment_delay_days", "int64", 0, 365, description="days the current bill is overdue"),
                _feature("dropped_calls", "int64", 0, 1000, description="calls dropped by the network that day"),
            ],
        ),
        TableSpec(
            name="labels",
            key=["customer_id", "label_timestamp"],
            timestamp="label_timestamp",
            references={"customer_id": "entities"},
            columns=[
                ColumnSpec(name="customer_id", dtype="int64", role="key", min=1),
                ColumnSpec(name="label_timestamp", dtype="timestamp", role="timestamp", description="prediction time"),
                ColumnSpec(name="churned", dtype="int64", role="label", categories=[0, 1],
                           description="1 if the customer left within the horizon after label_timestamp"),
            ],
        ),
    ],
)

BUILTIN_SCHEMAS = {"churn": CHURN_SCHEMA}

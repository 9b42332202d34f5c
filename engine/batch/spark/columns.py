"""The columns of the Spark jobs: input's JSON text column, result, line and impact columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.batch.spark.errors import SparkJobError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


FACTS = "facts"  # the column of JSON text, when the input is JSON Lines

TEXT = pa.string()
RESULT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("status", TEXT),
    ("shipment_id", TEXT),
    ("currency", TEXT),
    ("currency_minor_units", pa.int32()),
    ("total_insured_value", TEXT),
    ("components", pa.map_(TEXT, TEXT)),
    ("premium", TEXT),
    ("deductible", TEXT),
    ("decision", TEXT),
    ("reasons", pa.list_(TEXT)),
    ("flags", pa.list_(TEXT)),
    ("figures", pa.map_(TEXT, TEXT)),
    ("policy_id", TEXT),
    ("policy_version", TEXT),
    ("policy_sha256", TEXT),
    ("rules_id", TEXT),
    ("audit_id", TEXT),
    ("error", pa.struct([("kind", TEXT), ("path", TEXT), ("message", TEXT)])),
    ("result", TEXT),
)
# `value_dataframe(..., lines_only=True)`: what writing tiv batch's JSON Lines needs, no
# more (the structured columns cost a JSON parse per row).
LINE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("status", TEXT),
    ("result", TEXT),
)
IMPACT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("shipment_id", TEXT),
    ("currency", TEXT),
    ("currency_minor_units", pa.int32()),
    ("tiv_before", TEXT),
    ("tiv_after", TEXT),
    ("tiv_change", TEXT),
    ("premium_before", TEXT),
    ("premium_after", TEXT),
    ("premium_change", TEXT),
    ("decision_before", TEXT),
    ("decision_after", TEXT),
    ("error_before", TEXT),
    ("error_after", TEXT),
    ("unreadable", pa.bool_()),
    ("changed", pa.bool_()),
)


def spark_schema(df: DataFrame, keys: Sequence[str], fields: Sequence[tuple[str, Any]]) -> Any:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise SparkJobError(
            f"no key column {missing[0]!r} in the input (columns: {', '.join(df.columns)}); "
            "keys are columns of a Parquet input"
        )
    key_fields = [df.schema[k] for k in keys]
    return StructType(
        [*key_fields, *(StructField(name, from_arrow_type(kind), True) for name, kind in fields)]
    )

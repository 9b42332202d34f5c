"""The columns of the Spark jobs: input's JSON text column, result, line and impact columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.batch.spark.errors import SparkJobError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


FACTS = "facts"  # the column of JSON text, when the input is JSON Lines

_TEXT = pa.string()
RESULT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("status", _TEXT),
    ("shipment_id", _TEXT),
    ("currency", _TEXT),
    ("currency_minor_units", pa.int32()),
    ("total_insured_value", _TEXT),
    ("components", pa.map_(_TEXT, _TEXT)),
    ("premium", _TEXT),
    ("deductible", _TEXT),
    ("decision", _TEXT),
    ("reasons", pa.list_(_TEXT)),
    ("flags", pa.list_(_TEXT)),
    ("figures", pa.map_(_TEXT, _TEXT)),
    ("policy_id", _TEXT),
    ("policy_version", _TEXT),
    ("policy_sha256", _TEXT),
    ("rules_id", _TEXT),
    ("audit_id", _TEXT),
    ("error", pa.struct([("kind", _TEXT), ("path", _TEXT), ("message", _TEXT)])),
    ("result", _TEXT),
)
# `value_dataframe(..., lines_only=True)`: what writing tiv batch's JSON Lines needs, no
# more (the structured columns cost a JSON parse per row).
LINE_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("status", _TEXT),
    ("result", _TEXT),
)
IMPACT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("row", pa.int64()),
    ("line", pa.int64()),
    ("shipment_id", _TEXT),
    ("currency", _TEXT),
    ("currency_minor_units", pa.int32()),
    ("tiv_before", _TEXT),
    ("tiv_after", _TEXT),
    ("tiv_change", _TEXT),
    ("premium_before", _TEXT),
    ("premium_after", _TEXT),
    ("premium_change", _TEXT),
    ("decision_before", _TEXT),
    ("decision_after", _TEXT),
    ("error_before", _TEXT),
    ("error_after", _TEXT),
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

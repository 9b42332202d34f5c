"""Scale-out on Apache Spark: value and compare whole books of shipments, Parquet in and out.

Imported only when used (`pip install 'tiv-engine[spark]'`). In: a Spark DataFrame of
shipments, either in the Parquet schema of `engine.batch.parquet` (one column per fact) or
with a `facts` column of JSON text (a JSON Lines bordereau, one line per row); and a
rule repository. Out: `value_dataframe`, one result row per input row; `impact_dataframe`
and `impact_summary`, the per-row differences between two pack versions and the very
report `tiv impact` prints.

Every row's `result` is the line local `tiv batch` writes for it, byte for byte: the
rows are encoded by batch's own encoder (`engine.batch.rows`), numbered as batch numbers
them. A row with bad facts is an error row, never a failed job.

Money in the result columns is decimal text (`"1234.50"`), exactly as `tiv batch`
writes it, not a DecimalType: one column holds many currencies, and a fixed scale would
either cut KWD's third decimal or print JPY with decimals it does not have. Casting a
money column to `decimal(38,4)` is exact for every currency (see `engine.batch.parquet`).

The modules, one job each:

    rules       the rules as shipped to executors, compiled once per executor process
    columns     the input's and the results' columns (Arrow and Spark schemas)
    arrow_rows  Arrow input batches to batch's numbered rows
    results     batch's JSON lines to result columns
    valuing     value_dataframe
    impact      impact_dataframe, impact_summary
    session     a SparkSession on any master, Spark Connect included
    files       reading bordereaux, writing results (never through the driver)
    audit       a hash-chained audit segment per task, and the manifest
    progress    Spark's stages as progress lines
    jobs, cli   `tiv batch --spark` and `tiv impact --spark`
"""

from engine.batch.spark.audit import seal_audit
from engine.batch.spark.cli import batch_command, impact_command
from engine.batch.spark.columns import FACTS, IMPACT_FIELDS, LINE_FIELDS, RESULT_FIELDS
from engine.batch.spark.errors import SparkJobError
from engine.batch.spark.files import csv_headers, read_input, write_output
from engine.batch.spark.impact import impact_dataframe, impact_summary
from engine.batch.spark.jobs import SparkSummary, run_spark_batch, run_spark_impact
from engine.batch.spark.progress import StageProgress
from engine.batch.spark.rules import RulesPayload, compiles
from engine.batch.spark.session import session
from engine.batch.spark.valuing import value_dataframe

__all__ = [
    "FACTS",
    "IMPACT_FIELDS",
    "LINE_FIELDS",
    "RESULT_FIELDS",
    "RulesPayload",
    "SparkJobError",
    "SparkSummary",
    "StageProgress",
    "batch_command",
    "compiles",
    "csv_headers",
    "impact_command",
    "impact_dataframe",
    "impact_summary",
    "read_input",
    "run_spark_batch",
    "run_spark_impact",
    "seal_audit",
    "session",
    "value_dataframe",
    "write_output",
]

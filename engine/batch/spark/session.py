"""A SparkSession on any master: local[N], a cluster, or a Spark Connect server."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from engine.batch.spark.errors import SparkJobError


def session(master: str, app_name: str = "tiv", conf: Mapping[str, str] | None = None) -> Any:
    """A SparkSession on `master`: `local[N]`, `spark://host:port`, `yarn`, ... or a
    Spark Connect server `sc://host:port`. Raises SparkJobError if it cannot start."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkJobError("--spark needs PySpark: pip install 'tiv-engine[spark]'") from None
    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    local: dict[str, str] = {}
    if master.startswith("local"):
        # Local executors run this very interpreter (its venv has tiv); a cluster's
        # executors use the Python their own environment names.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        local = {
            # One machine: listen on loopback only, and shuffle (the row count) into a
            # few partitions, not 200.
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.shuffle.partitions": "4",
            # The driver is the executor here: its heap holds every task's Arrow and
            # Parquet buffers (Spark's 1 GB default ran short at a million rows). Read
            # only when the JVM starts, so a session already running keeps its own.
            "spark.driver.memory": "2g",
        }
    if not master.startswith("sc://"):  # a Connect server's UI is set where it starts
        local["spark.ui.showConsoleProgress"] = "false"  # tiv prints the stages itself
    settings = {
        **local,
        # Arrow batches of this size keep a task's memory flat and its progress visible.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
        **(conf or {}),
    }
    for key, setting in settings.items():
        builder = builder.config(key, setting)
    try:
        spark = builder.getOrCreate()
        if not master.startswith("sc://"):
            spark.sparkContext.setLogLevel("ERROR")  # the summary says what matters
        return spark
    except Exception as error:  # Java missing, a master that does not answer
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SparkJobError(f"cannot start Spark on {master}: {first}") from None

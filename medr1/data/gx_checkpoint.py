"""One Great Expectations checkpoint over a pandas frame, in an ephemeral context: what the data checks
(medr1/data/checks.py) and the drift checks (medr1/data/drift.py) both run, each with its own suite."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def run_checkpoint(frame: pd.DataFrame, suite_of: Callable, name: str, result_format: dict,
                   data_docs: Path | None = None) -> list:
    """GX's result of every expectation of `suite_of(gx)` over `frame`. With `data_docs`, GX's Data Docs HTML
    site of the run is written into that folder."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # the callers print their own summary
    batch = context.data_sources.add_pandas("medr1").add_dataframe_asset(name).add_batch_definition_whole_dataframe(
        f"all {name}")
    suite = context.suites.add(suite_of(gx))
    actions = []
    if data_docs is not None:
        context.add_data_docs_site(site_name=f"medr1_{name}", site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(data_docs).resolve())},
        })
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[f"medr1_{name}"]))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(name=f"medr1_{name}_checkpoint",
                                                       validation_definitions=[definition], actions=actions,
                                                       result_format=result_format))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return [outcome for validation in result.run_results.values() for outcome in validation.results]

"""Prefect flows around `dvc repro`: the pipeline on a schedule or on new data, with data checks
before every run, retries for transient failures, and the run's results as Prefect artifacts.

dvc.yaml stays the one definition of the graph: the flows read it through DVC and run each stage
with `dvc repro --single-item`; they never re-implement a stage.
"""

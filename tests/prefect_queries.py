"""What a flow run left on the Prefect API it ran against: its task runs and its artifacts."""


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def artifacts(flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with client() as api:
        found = api.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {artifact.key: artifact for artifact in found}


def task_run_names(flow_run_id) -> list[str]:
    """The flow run's task runs by name, in the order they were to start."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with client() as api:
        runs = api.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                  sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    return [task_run.name for task_run in runs]

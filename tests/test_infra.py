"""The deployments users create from infra/prefect and prefect.yaml: each entrypoint is a flow of this
repository, each pool's job variables exist in the base job template the file says to create it with,
and a study cell asks for one GPU on Kubernetes and on Docker."""

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "prefect.yaml", *sorted((ROOT / "infra/prefect").glob("deployments-*.yaml"))]
CREATE = re.compile(r"prefect work-pool create (\S+) --type (\S+) --base-job-template (\S+)")


def pool_templates(path: Path) -> dict[str, dict]:
    """The pools the file's header says to create, with their base job templates."""
    return {pool: json.loads((ROOT / template).read_text()) for pool, _, template in CREATE.findall(path.read_text())}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_deployments_name_real_flows_and_known_job_variables(path):
    config = yaml.safe_load(path.read_text())
    templates = pool_templates(path)
    for deployment in config["deployments"]:
        module, function = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), function)
        assert flow.name.startswith("medr1-")
        pool = deployment["work_pool"]
        if pool["name"] not in templates:  # a process pool, which flows.deploy creates
            assert path.name == "prefect.yaml", f"{path.name}: no `prefect work-pool create {pool['name']}` line"
            continue
        variables = templates[pool["name"]]["variables"]["properties"]
        assert set(pool.get("job_variables", {})) <= set(variables), (deployment["name"], set(variables))


def test_study_cells_ask_for_one_gpu_each():
    path = ROOT / "infra/prefect/deployments-study.yaml"
    cells = {d["name"]: d for d in yaml.safe_load(path.read_text())["deployments"]}
    templates = pool_templates(path)
    assert cells["cell-gpu"]["work_pool"]["job_variables"]["gpus"] == 1
    kubernetes = json.dumps(templates["medr1-cells-gpu"]["job_configuration"]["job_manifest"])
    assert '"nvidia.com/gpu": "{{ gpus }}"' in kubernetes
    docker = templates["medr1-cells-docker"]
    assert docker["job_configuration"]["container_create_kwargs"] == "{{ container_create_kwargs }}"
    (request,) = docker["variables"]["properties"]["container_create_kwargs"]["default"]["device_requests"]
    assert request["count"] == 1 and request["capabilities"] == [["gpu"]]

"""The deployments users create from infra/prefect and prefect.yaml: each entrypoint is a flow of this
repository, each pool's job variables exist in the base job template the file says to create it with,
and a study cell asks for one GPU on Kubernetes and on Docker. TRL's vLLM server (compose, Kubernetes, its image) runs
on one GPU, with the trainer's TRL and a vLLM that TRL supports, and flags `trl vllm-serve` knows."""

import dataclasses
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


# TRL's vLLM rollout server in an environment of its own: the compose service, its image, the Kubernetes manifest.
VLLM_IMAGE = ROOT / "infra/Dockerfile.vllm"


def vllm_serve_flags(arguments: list[str]) -> set[str]:
    return {argument.removeprefix("--") for argument in arguments if argument.startswith("--")}


def test_the_vllm_image_pins_the_training_trl_and_a_vllm_it_supports():
    from importlib import metadata

    from packaging.requirements import Requirement

    text = VLLM_IMAGE.read_text()
    (vllm_version,) = re.findall(r"^FROM vllm/vllm-openai:v(\S+)$", text, re.MULTILINE)
    (trl_version,) = re.findall(r"\btrl==(\S+)", text)
    assert trl_version == metadata.version("trl")  # the server speaks the trainer's TRL protocol
    (supported,) = [requirement for requirement in map(Requirement, metadata.requires("trl"))
                    if requirement.name == "vllm" and requirement.marker.evaluate({"extra": "vllm"})]
    assert supported.specifier.contains(vllm_version), (vllm_version, str(supported))
    assert re.search(r'^ENTRYPOINT \["trl", "vllm-serve"\]$', text, re.MULTILINE)


def test_compose_runs_the_vllm_server_on_one_gpu_only_when_asked():
    from trl.scripts.vllm_serve import ScriptArguments

    services = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())["services"]
    vllm = services["vllm"]
    assert vllm["profiles"] == ["vllm"]  # `make stack` (no profile) on a machine without GPUs leaves it out
    assert all("profiles" not in service for name, service in services.items() if name != "vllm")
    assert (ROOT / "infra" / vllm["build"]["context"] / vllm["build"]["dockerfile"]).resolve() == VLLM_IMAGE
    vllm_version = re.search(r"vllm-openai:v(\S+)", VLLM_IMAGE.read_text()).group(1)
    trl_version = re.search(r"trl==(\S+)", VLLM_IMAGE.read_text()).group(1)
    assert vllm["image"] == f"medr1-vllm:{vllm_version}-trl{trl_version}"  # a tag that says what is inside
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
    assert vllm["command"][0] == "--model"
    assert vllm_serve_flags(vllm["command"]) <= {field.name for field in dataclasses.fields(ScriptArguments)}
    assert vllm["network_mode"] == "host" and vllm["ipc"] == "host"


def test_the_kubernetes_vllm_server_has_one_gpu_and_a_service_on_its_port():
    from trl.scripts.vllm_serve import ScriptArguments

    documents = {document["kind"]: document
                 for document in yaml.safe_load_all((ROOT / "infra/kubernetes/vllm-server.yaml").read_text())}
    deployment, service = documents["Deployment"], documents["Service"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    compose_image = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())["services"]["vllm"]["image"]
    assert container["image"].rsplit("/", 1)[-1] == compose_image  # the same build, pushed to a registry
    arguments = container["args"]
    assert vllm_serve_flags(arguments) <= {field.name for field in dataclasses.fields(ScriptArguments)}
    port = int(arguments[arguments.index("--port") + 1])
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container_port["name"] and service_port["port"] == port
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # the model comes from the claim the work pool's training jobs mount, at the same path
    pool = json.loads((ROOT / "infra/prefect/kubernetes-work-pool.json").read_text())
    claim = pool["variables"]["properties"]["models_claim"]["default"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    (models,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/models"]
    assert volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == claim
    assert arguments[arguments.index("--model") + 1].startswith("/models/")

"""DeepSpeed on the CPU: the train stage under `accelerate launch` with a DeepSpeed config, two processes,
ZeRO-2 and ZeRO-3, on a Qwen2-VL-shaped checkpoint folder, through DistinctWorkGRPOTrainer.

The recipes launch with infra/accelerate/deepspeed-zero{2,3}.yaml on GPUs. Here the same settings run with
`use_cpu: true` and `mixed_precision: 'no'`: DeepSpeed's CPU accelerator talks gloo when oneCCL is not
installed (deepspeed/accelerator/cpu_accelerator.py), so the launch, ZeRO's partitioning and the
ZeRO-3 save (`zero3_save_16bit_model`) run as they would on GPUs, at CPU speed.

The first DeepSpeed run on a machine JIT-compiles DeepSpeed's shared-memory collective op (~100 s of CPU
on 2 cores; deepspeed.comm builds it at init, training never calls it) into ~/.cache/torch_extensions;
later runs load it.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, free_port, params_yaml

from medr1.data.records import read_jsonl

pytestmark = pytest.mark.slow

# Generous: a cold compile of DeepSpeed's op took 243 s on 2 loaded cores; one warm run takes 30-60 s.
# A run past it is stuck, typically ranks waiting in different collective calls (ZeRO-3 gathers a module's
# parameters at each call, so every rank must call the same modules the same number of times).
RUN_TIMEOUT_S = 600
# The ZeRO-3 case's shapes: 3 micro-batches a step, 4 completions a question, shuffled by TRL before it cuts the
# micro-batches. At 180aa22 (before the ranks agreed whether to share prompts) step 3 gave one rank a micro-batch
# with a repeated prompt and the other none: the first called the language model twice, the second once, and
# both waited in ZeRO-3's gathers until killed (issue 29, item 3).
ZERO3_SHAPES = {"gradient_accumulation_steps": 3, "num_generations": 4, "max_steps": 3, "max_completion_length": 8}
LEARNING_RATE = 1e-6  # Med-R1's; one Adam step moves each weight by about this much at most


def accelerate_config(zero_stage: int) -> dict:
    """infra/accelerate/deepspeed-zero{2,3}.yaml's settings, on the CPU in float32, two processes."""
    shipped = yaml.safe_load((REPO / "infra/accelerate" / f"deepspeed-zero{zero_stage}.yaml").read_text())
    return {**shipped, "use_cpu": True, "mixed_precision": "no", "num_processes": 2}


@pytest.fixture(scope="module")
def qwen2_vl_folder(tmp_path_factory, processed):
    from medr1.synthetic.checkpoints import write_checkpoint

    texts = [r.question + " " + " ".join(r.options.values()) for r in read_jsonl(processed / "train.jsonl")]
    return write_checkpoint("qwen2-vl", tmp_path_factory.mktemp("qwen2-vl"), texts).resolve()


def _workspace(root, folder, processed, zero_stage: int, **trl_changes):
    """A folder the train stage runs in: the code (linked), the processed data, models/base pointing
    at `folder`, the CPU accelerate config and params.yaml with the med-r1 recipe's layout at 1 step
    (`trl_changes` over its train.trl)."""
    from medr1.model.base import reference_local_base

    for name in ("medr1", "stages", "dvc.yaml"):  # the stage's fingerprint hashes its code deps from dvc.yaml
        (root / name).symlink_to(REPO / name)
    (root / "data").mkdir()
    (root / "data/processed").symlink_to(processed)
    reference_local_base(folder, root / "models/base")
    config = root / "infra/accelerate" / f"cpu-deepspeed-zero{zero_stage}.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump(accelerate_config(zero_stage)))
    launcher = f"accelerate launch --config_file {config.relative_to(root)} --main_process_port {free_port()}"
    # 2 processes x 2 completions a step: one question per process, its 2 completions in one micro-batch.
    # beta > 0 brings TRL's reference model, which DeepSpeed prepares too (partitioned under ZeRO-3).
    # log_level info: transformers says when it loads a model partitioned for ZeRO-3.
    train = {"device": "cpu", "launcher": launcher, "attn_implementation": "sdpa", "max_pixels": 12544,
             "reasoning": "think_before", "prompts": "med-r1", "rewards": "med-r1",
             "reward_funcs": ["accuracy", "format"],
             "trl": {"max_steps": 1, "save_steps": 1, "learning_rate": LEARNING_RATE, "per_device_train_batch_size": 2,
                     "gradient_accumulation_steps": 1, "num_generations": 2, "max_completion_length": 4, "beta": 0.04,
                     "logging_steps": 1, "report_to": ["dvclive"], "save_total_limit": None, "log_level": "info",
                     **trl_changes}}
    (root / "params.yaml").write_text(params_yaml({"train": train}))
    return root


def _run_stage(workspace) -> str:
    """`python -m stages.launch train` (what dvc.yaml runs) in `workspace`; its output. Past RUN_TIMEOUT_S
    the launcher's process group (its workers included) is killed and the test fails with the log."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           # DeepSpeed picks its accelerator itself (CUDA where a GPU is visible), apart from accelerate's use_cpu
           "DS_ACCELERATOR": "cpu"}
    log_path = workspace / "train.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "stages.launch", "train"], cwd=workspace, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        returncode = process.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the DeepSpeed run did not end in {RUN_TIMEOUT_S} s: most likely its ranks wait in different "
                    f"collective calls (under ZeRO-3, a rank that calls a module more often than another hangs "
                    f"both).\n{log_path.read_text()[-4000:]}")
    output = log_path.read_text()
    assert returncode == 0, output[-6000:]
    return output


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_train_stage_trains_two_processes_with_deepspeed_on_the_cpu(zero_stage, tmp_path, qwen2_vl_folder,
                                                                    processed):
    import torch
    from transformers import AutoModelForImageTextToText

    shapes = ZERO3_SHAPES if zero_stage == 3 else {}
    workspace = _workspace(tmp_path, qwen2_vl_folder, processed, zero_stage, **shapes)
    started = time.monotonic()
    output = _run_stage(workspace)
    print(f"ZeRO-{zero_stage}: the train stage took {time.monotonic() - started:.1f} s")

    # DeepSpeed's communication backend started on both ranks (on gloo), and ZeRO-3 partitioned the models
    assert output.count("deepspeed_shm_comm_op built successfully") == 2, output[-4000:]
    accumulation, steps = shapes.get("gradient_accumulation_steps", 1), shapes.get("max_steps", 1)
    batch = 2 * 2 * accumulation  # 2 processes x 2 completions x accumulation
    assert f"Total train batch size (w. parallel, distributed & accumulation) = {batch}" in output
    assert ("Detected DeepSpeed ZeRO-3: activating zero.init()" in output) == (zero_stage == 3)
    log = json.loads((workspace / "models/grpo/trainer_log.json").read_text())
    assert [entry["step"] for entry in log if "reward" in entry] == list(range(1, steps + 1))
    assert f"[train] {steps} GRPO steps" in output

    # The published model is whole, the ZeRO-3 shards gathered: every tensor loads, within the Adam steps of
    # the base's values (random weights of about 0.02: a shard, a zeroed or a reinitialised tensor cannot pass).
    trained, loading = AutoModelForImageTextToText.from_pretrained(workspace / "models/grpo",
                                                                   output_loading_info=True)
    assert not any(loading.values()), loading
    base = AutoModelForImageTextToText.from_pretrained(qwen2_vl_folder).state_dict()
    saved = trained.state_dict()
    assert saved.keys() == base.keys()
    for name, tensor in base.items():
        assert saved[name].shape == tensor.shape, name
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=2 * steps * LEARNING_RATE, msg=name)
    assert not (workspace / "models/grpo.partial").exists()

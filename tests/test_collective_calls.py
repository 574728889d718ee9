"""Every rank makes the same sequence of module calls, whatever its micro-batch holds.

Under DeepSpeed ZeRO-3 each module call is a collective (the module's parameters are gathered from
every rank), so a rank that ran the language model twice (a shared prompt, then the completions on
its cache) while another ran it once would hang both. Two processes on the CPU (torchrun, gloo) are
given different repetition patterns and count their calls.
"""

import json
import os
import shutil
import subprocess

from conftest import REPO

from medr1.data.records import read_jsonl


def test_ranks_with_different_repetition_make_the_same_module_calls(processed, tmp_path):
    """Rank 0's rows ask two questions twice each (its prompts are shared), rank 1's four questions once."""
    from medr1.synthetic.checkpoints import write_checkpoint

    records = list(read_jsonl(processed / "train.jsonl"))
    folder = write_checkpoint("qwen2-vl", tmp_path / "model",
                              [r.question + " " + " ".join(r.options.values()) for r in records])
    out = tmp_path / "counts"
    out.mkdir()
    torchrun = shutil.which("torchrun") or str(REPO / ".venv/bin/torchrun")
    ranks = REPO / "tests/rank_module_calls.py"
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(ranks), str(folder),
                             str(processed), str(out), "0,0,1,1", "2,3,4,5"], check=False, cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert counts[0] == counts[1], f"module calls differ between ranks: {counts}"
    assert counts[0] == {"language_model": 2, "visual": 1}  # prompts, then completions on their cache

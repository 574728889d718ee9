"""Where the trainer's logs go: `train.trl.report_to` names TRL's loggers, `dvclive` among them.

DVCLive is wired here rather than by name inside transformers: it writes to the stage's own
folder (metrics/train: metrics.json for `dvc exp show`, plots/ for `dvc plots`), writes no dvc.yaml
of its own (dvc.yaml declares those outputs) and no params (params.yaml and dvc.lock hold them),
and logs each value at the trainer's global step (a resumed run's curves start at the step it
resumed from). A run given no folder (the study's cells) drops "dvclive".
"""

from __future__ import annotations

from pathlib import Path

DVCLIVE = "dvclive"


def split_report_to(report_to) -> tuple[list[str], bool]:
    """TRL's report_to without dvclive (["none"] when nothing is left), and whether dvclive was asked for."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    asked = DVCLIVE in names
    others = [name for name in names if name not in (DVCLIVE, "none")]
    return others or ["none"], asked


def dvclive_callback(folder: Path):
    """A transformers DVCLive callback that writes to `folder`, on the main process only."""
    from transformers.integrations import DVCLiveCallback

    class StageFolderAtGlobalStep(DVCLiveCallback):
        def setup(self, args, state, model):
            from dvclive import Live

            self._initialized = True
            if state.is_world_process_zero:
                self.live = Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False, report=None)

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if not self._initialized:
                self.setup(args, state, model)
            if state.is_world_process_zero:
                self.live.step = state.global_step
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    return StageFolderAtGlobalStep()

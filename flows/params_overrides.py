"""Flow parameters as params.yaml overrides, the way `dvc exp run -S key=value` applies them (it is
DVC's own code underneath, so comments and layout survive), checked against medr1's typed params."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medr1.errors import PipelineError


class OverrideError(PipelineError):
    """An override is malformed or names a key params.yaml does not have."""


@contextmanager
def overridden_params(params_file: Path, overrides: list[str]) -> Iterator[None]:
    """params.yaml with `overrides` ("train.trl.max_steps=100", ...) applied while the block runs, then
    restored: an override is for one run, never for the runs after it. dvc.lock keeps what the run used."""
    if not overrides:
        yield
        return
    original = params_file.read_bytes()
    try:
        _apply(params_file, overrides)
        yield
    finally:
        params_file.write_bytes(original)


def check_overrides(params_file: Path, overrides: list[str]) -> None:
    """Refuse `overrides` that are malformed or would make invalid params (a launcher that is not
    one, an unknown key), on a scratch copy of params.yaml: nothing runs and nothing is written."""
    import shutil
    import tempfile

    check_shape(overrides)
    if not overrides or not params_file.is_file():
        return
    with tempfile.TemporaryDirectory(prefix="medr1-overrides-") as scratch:
        copy = Path(scratch) / "params.yaml"
        shutil.copyfile(params_file, copy)
        _apply(copy, overrides)


def check_shape(overrides: list[str]) -> None:
    malformed = [item for item in overrides if not isinstance(item, str) or "=" not in item]
    if malformed:
        raise OverrideError(f"overrides must look like section.key=value (as `dvc exp run -S` takes them): {malformed}")


def _apply(params_file: Path, overrides: list[str]) -> None:
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from medr1.config import ParamsError, load_params

    check_shape(overrides)
    try:
        apply_overrides(params_file, list(overrides))
    except InvalidArgumentError as error:
        cause = error.__cause__ or error
        raise OverrideError(f"cannot apply {list(overrides)} to {params_file.name}: {cause}") from error
    try:
        params = load_params(params_file)
        if any(item.lstrip("+").startswith(("train.trl.", "sft.trl.")) for item in overrides):
            from medr1.train.trl_config import check_trl_settings  # imports TRL: only for a TRL setting

            check_trl_settings(params)  # a misspelt TRL name is refused here, not by the train stage later
    except ParamsError as error:
        raise OverrideError(f"after the overrides {list(overrides)}: {error}") from error

"""make install hands pip's configured package sources to uv (infra/uv_install.py)."""

import importlib.util
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("uv_install", ROOT / "infra" / "uv_install.py")
uv_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_install)


def test_pip_sources_from_files_and_environment_reach_uv(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[install]\nconstraint = /etc/cap.txt\n"
                      "[global]\nconstraint = /etc/other.txt\ncert = /etc/ca.pem\n"
                      "extra-index-url =\n    file:///srv/a/simple\n    file:///srv/b/simple\n"  # pip's multi-line form
                      "no-index = true\ntrusted-host = mirror.internal\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/wheels")
    monkeypatch.setenv("PIP_CERT", "/etc/ca-from-environment.pem")  # a PIP_* variable wins over a file
    settings = uv_install.pip_settings()
    assert settings["cert"] == ["/etc/ca-from-environment.pem"]
    arguments = uv_install.uv_arguments(settings)
    pairs = list(itertools.pairwise(arguments))
    assert ("--extra-index-url", "file:///srv/a/simple") in pairs
    assert ("--extra-index-url", "file:///srv/b/simple") in pairs
    assert ("--find-links", "/srv/wheels") in pairs
    assert ("--constraint", "/etc/cap.txt") in pairs and ("--constraint", "/etc/other.txt") not in pairs
    assert ("--allow-insecure-host", "mirror.internal") in pairs and "--no-index" in arguments
    assert pairs[-1] == ("--index-strategy", "unsafe-best-match")


def test_no_pip_configuration_adds_only_the_index_strategy(monkeypatch):
    assert uv_install.uv_arguments({}) == ["--index-strategy", "unsafe-best-match"]

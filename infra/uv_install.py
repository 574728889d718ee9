"""Install packages with uv from the sources pip is configured with on this machine.

`make install` uses uv because it installs the same pinned versions as pip in a fraction of the
time (torch and its CUDA libraries are about 5 GB to unpack). uv does not read pip's configuration,
so a machine whose pip is pointed at a local index, wheel folder, constraint file or CA bundle
(`pip config list`) would send uv to the public index instead; this passes them on. (The GPU environment's
dry-run resolution in tests/test_install.py runs `uv pip compile` with the same sources through `uv_pip`.)

    python infra/uv_install.py UV_BIN [uv pip install arguments...]
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# pip setting -> uv option (settings that hold several values separate them by white space).
OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}


# pip reads `global`, then the command's own section, then PIP_* variables; a later one wins.
SECTIONS = ("global", "install", ":env:")


def pip_settings() -> dict[str, list[str]]:
    """The settings `pip install` would use here (every config file and PIP_* variable), by name."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    by_section: dict[str, dict[str, list[str]]] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if section in SECTIONS:
            # pip prints each value as a Python literal; a multi-line value holds several, one a line
            by_section.setdefault(section, {})[name] = str(ast.literal_eval(value.strip())).split()
    settings: dict[str, list[str]] = {}
    for section in SECTIONS:
        settings.update(by_section.get(section, {}))
    return settings


def uv_arguments(settings: dict[str, list[str]]) -> list[str]:
    arguments = []
    for name, option in OPTIONS.items():
        for value in settings.get(name, []):
            arguments += [option, value]
    if settings.get("no-index", ["false"])[0].lower() in ("1", "true", "yes", "on"):
        arguments.append("--no-index")  # an offline machine with wheel folders must not reach for PyPI
    # pip takes the best version across all its indexes; uv's default takes the first index's only.
    return arguments + ["--index-strategy", "unsafe-best-match"]


def uv_pip(uv: str, subcommand: str, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """`uv pip <subcommand> <arguments>` with pip's sources, and the environment to run it in (pip's CA bundle)."""
    settings = pip_settings()
    environment = dict(os.environ)
    if settings.get("cert"):
        environment.setdefault("SSL_CERT_FILE", settings["cert"][0])
    return [uv, "pip", subcommand, *arguments, *uv_arguments(settings)], environment


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    uv, *arguments = sys.argv[1:]
    command, environment = uv_pip(uv, "install", ["--python", sys.executable, *arguments])
    return subprocess.run(command, check=False, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main())

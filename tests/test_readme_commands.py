"""Every ``lopt ...`` line of the README's shell code blocks (and of the records of recipe
variants and tuning ranges it links to) is a valid command line: a known command, known flags,
and overrides (every value of a sweep) that compose with the real configs. A renamed key or
option that the README still shows fails here."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import initialize_config_module
from hydra._internal.utils import get_args_parser

from lopt_cli.cli import COMMANDS, multirun_flag_last
from lopt_cli.commands.validation import check_seed, compose_checked, expand

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = (README, ROOT / "docs" / "recipe_variants" / "README.md",
             ROOT / "docs" / "tuning_ranges" / "README.md", ROOT / "docs" / "results" / "README.md")


def readme_command_lines(documents=(README,)) -> list[str]:
    """The ``lopt <command> ...`` lines of the documents' bash blocks (comments stripped)."""
    blocks = [block for document in documents
              for block in re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.S)]
    lines = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"^(\w+=\S+\s+)*", "", line.split(" #", 1)[0].strip())  # env vars
            if line.startswith("lopt ") and line.split()[1] in COMMANDS:
                lines.append(line)
    return lines


def test_the_readme_shows_commands():
    commands = {line.split()[1] for line in readme_command_lines()}
    assert commands == set(COMMANDS), commands


@pytest.mark.parametrize("line", readme_command_lines(DOCUMENTS))
def test_readme_command_line_composes(line):
    import importlib

    words = shlex.split(line.replace("<", "").replace(">", ""))
    if {"--help", "-h"} & set(words):
        return
    module = importlib.import_module(COMMANDS[words[1]][0])
    if hasattr(module, "run_argv"):  # not Hydra (lopt cache): its own key=value options
        module.parse_options(words[2:])
        return
    args, unknown = get_args_parser().parse_known_args(multirun_flag_last(words[2:]))
    assert not unknown, f"{line}: unknown flags {unknown}"
    overrides = [o for o in args.overrides if not o.startswith(("hydra.", "hydra/"))]
    with initialize_config_module("conf", version_base="1.3"):
        for combination in expand(overrides):
            check_seed(compose_checked(module.CONFIG_NAME, combination))

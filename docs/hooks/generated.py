"""MkDocs hook: fills the reference pages from the code, so that they cannot drift from it.

A page line ``<!-- generated: config-reference -->`` becomes the config reference
(:func:`siteflow.config.reference.config_reference`, built from the code that validates
configs); ``<!-- generated: cli-reference -->`` becomes the ``--help`` of every command line
the package installs (``[project.scripts]`` of pyproject.toml) and of its ``python -m`` tools.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_TOOLS = {
    "python -m siteflow.handover": "siteflow.handover.__main__:main",
    "python -m siteflow.deploy.flower.worker": "siteflow.deploy.flower.worker:main",
}
"""Command lines run as modules, beside the console scripts."""


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    if "<!-- generated: config-reference -->" in markdown:
        from siteflow.config.reference import config_reference

        markdown = markdown.replace("<!-- generated: config-reference -->", config_reference())
    if "<!-- generated: cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- generated: cli-reference -->", cli_reference())
    return markdown


def cli_reference() -> str:
    """Every command line's ``--help``, as Markdown sections."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    sections = []
    for name, target in {**scripts, **MODULE_TOOLS}.items():
        sections.append(f"## `{name}`\n\n```text\n{help_text(target).rstrip()}\n```")
    return "\n\n".join(sections) + "\n"


def help_text(target: str) -> str:
    """What ``module:function`` prints for ``--help`` (argparse wraps at ``COLUMNS``: fixed here)."""
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    out = io.StringIO()
    os.environ["COLUMNS"] = "100"
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["--help"])
    return out.getvalue()

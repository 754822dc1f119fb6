"""The documentation: the config reference is complete, the site builds strictly, and the
tutorials' commands marked runnable work as written.

The config reference is generated from the code that validates configs: every key the
validator accepts must be listed with a meaning. The site's build (MkDocs, strict) needs the
docs extras (``make docs-setup``): those tests carry the ``docs`` mark, which ``make test``
leaves out and ``make test-all`` (CI) runs. A tutorial's ```bash block whose line before is
``<!-- runnable -->`` is run, the page's blocks in order in one shell as a reader runs them, in a
scratch folder that sees the repository's files.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from siteflow.config.keys import SECTIONS
from siteflow.config.reference import COMPONENT_KINDS, DATACLASS_SECTIONS, component_options, config_reference

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"^<!-- runnable -->\n```bash\n(.*?)^```$", re.M | re.S)


def test_the_config_reference_lists_every_key_the_validator_accepts_with_a_meaning():
    text = config_reference()
    for section, keys in SECTIONS.items():
        assert (f"### `{section}`" if section else "### top level") in text
        for key in keys:
            assert f"| `{key.name}` |" in text and key.meaning
    for path, cls in DATACLASS_SECTIONS:
        assert f"## `{path}`" in text
        for field in dataclasses.fields(cls):
            assert re.search(rf"^\| `{field.name}` \| [^|]+ \| [^|]+ \| \S", text, re.M), f"{path}.{field.name} has no meaning"
    undocumented = []
    for _, _, registry, supplied in COMPONENT_KINDS:
        for name in registry.names():
            assert f"### `{name}`" in text
            undocumented += [f"{name}.{option}" for option, _, _, meaning in component_options(registry.get(name), supplied) if not meaning]
    assert not undocumented, f"options without a meaning in their class's docstring: {undocumented}"


def test_the_reference_gives_types_and_defaults_as_the_validator_reads_them():
    text = config_reference()
    assert "| `epochs` | int | `10` |" in text
    assert "| `mode` | 'auto' or 'whole' or 'sliding_window' | `auto` |" in text
    assert "| `scheduler` | {name, kwargs} or null | `null` |" in text
    assert "| `base_channels` | int |" in text  # the U-Net's option, from its constructor
    assert "| `in_channels` |" not in text.split("## Models")[1].split("## Losses")[0]  # supplied by the data


def _build(docs_dir: Path, site_dir: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.docs
def test_the_site_builds_strictly_and_reads_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extras: make docs-setup")
    result = _build(DOCS, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'href="tutorials/first-study.html"' in index  # file links, not folders: readable from file://
    config_page = (tmp_path / "site" / "reference" / "config.html").read_text()
    assert "common.train.inference" in config_page and "replay_fraction" in config_page
    cli_page = (tmp_path / "site" / "reference" / "cli.html").read_text()
    assert "siteflow-train" in cli_page and "--seeds" in cli_page and "--verbose" in cli_page
    api_page = (tmp_path / "site" / "reference" / "api.html").read_text()
    assert "StudyContext" in api_page and "dice_loss" in api_page


@pytest.mark.docs
def test_a_broken_link_or_a_missing_name_fails_the_build(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extras: make docs-setup")
    config = tmp_path / "mkdocs.yml"
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    config.write_text((ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}"))
    page = docs / "how-to" / "troubleshooting.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    result = _build(docs, tmp_path / "site", config)
    assert result.returncode != 0 and "no-such-page.md" in result.stderr
    page.write_text(page.read_text().replace("[the missing page](no-such-page.md)", "") + "\n::: siteflow.no_such_module\n")
    result = _build(docs, tmp_path / "site", config)
    assert result.returncode != 0 and "siteflow.no_such_module" in result.stderr


def runnable_script(page: Path) -> str:
    """The ```bash blocks of ``page`` marked ``<!-- runnable -->``, in order, as one script."""
    return "\n".join(RUNNABLE.findall(page.read_text()))


def test_the_tutorials_and_guides_mark_their_commands_runnable():
    scripts = {page.name: runnable_script(page) for page in sorted((DOCS / "tutorials").glob("*.md"))}
    assert "make demo" in scripts["first-study.md"] and "siteflow-report" in scripts["first-study.md"]
    assert "--handover received.safetensors" in scripts["handover.md"]
    assert "infer.py" in runnable_script(DOCS / "how-to" / "use-a-trained-model.md")


def _scratch(tmp_path: Path) -> Path:
    """A folder whose entries are the repository's own (linked), so that runs write there."""
    scratch = tmp_path / "reader"
    scratch.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"exps", ".cache", "site", ".git", "report.html"}:
            (scratch / entry.name).symlink_to(entry)
    return scratch


def _run_pages(pages: list[str], tmp_path: Path) -> tuple[Path, str]:
    """Run the runnable blocks of ``pages`` (under docs/) in order, in one shell."""
    # the environment up to date first, in the repository itself (a reader has run the set-up)
    subprocess.run(["make", "setup"], cwd=ROOT, check=True, capture_output=True, timeout=1800)
    scratch = _scratch(tmp_path)
    script = "set -euo pipefail\n" + "\n".join(runnable_script(DOCS / page) for page in pages)
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    process = subprocess.Popen(
        ["bash", "-c", script], cwd=scratch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=1800)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output[-4000:]
    return scratch, output


@pytest.mark.slow
@pytest.mark.docs
def test_your_first_study_and_using_its_model_run_as_written(tmp_path):
    scratch, output = _run_pages(["tutorials/first-study.md", "how-to/use-a-trained-model.md"], tmp_path)
    assert "site matrix of dice" in output and "GPU available" not in output and "Tip:" not in output
    assert (scratch / "exps/demo/sequential/quick/test_results/samples.csv").is_file()
    assert (scratch / "exps/demo/fedbn/quick/test_results/samples.csv").is_file()
    assert re.search(r"^\s+site1\s", output, re.M), output[-2000:]  # the comparison's rows
    report = (scratch / "report.html").read_text()
    assert "demo/sequential" in report and "demo/fedbn" in report
    assert list((scratch / "predictions" / "site1").glob("*.png")) and (scratch / "predictions" / "site1" / "predictions.csv").is_file()
    assert (scratch / "exported" / "demo_sequential" / "MODEL_CARD.md").is_file()


@pytest.mark.slow
@pytest.mark.docs
def test_the_hand_over_tutorial_runs_as_written(tmp_path):
    scratch, output = _run_pages(["tutorials/handover.md"], tmp_path)
    assert "site1" in output and (scratch / "exps/demo/relay_deploy/site2/checkpoints/task_2/handover.safetensors").is_file()


def test_make_docs_without_the_docs_extras_says_how_to_install_them(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    stamp = tmp_path / "installed"  # the project's environment stands ready (newer than its sources) ...
    stamp.touch()
    result = subprocess.run(  # ... but its Python lacks MkDocs
        ["make", "--no-print-directory", "docs", f"PYTHON={bare / 'bin' / 'python'}", f"STAMP={stamp}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "make docs-setup" in result.stderr and "requirements-docs.txt" in result.stderr

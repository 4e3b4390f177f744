"""The ``pneumonitor`` command starts light: its parser imports no numerics library beyond numpy, and nothing it
starts with prints a warning (the MONAI Deploy SDK, whose Holoscan prints a stack-size warning at ``import monai``,
lives in ``.venv-deploy``, not in the core's environment). Timing: ``scripts/bench_startup.py``."""

import subprocess
import sys

HEAVY = ("torch", "monai", "scipy", "pandas", "matplotlib", "SimpleITK", "itk")


def test_the_parser_imports_no_heavy_library():
    probe = ("import sys; from pneumonitor.cli import build_parser; build_parser(); "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"building the parser imported {proc.stdout.strip()}"


def test_help_prints_every_command_and_no_warning():
    proc = subprocess.run([sys.executable, "-m", "pneumonitor", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert all(command in proc.stdout for command in ("analyze", "monitor", "evaluate", "datasets"))


def test_import_monai_loads_no_deploy_sdk():
    probe = "import sys, monai; print('monai.deploy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", (
        "monai.deploy is installed in the core's python (every command then pays for Holoscan and prints its "
        "stack-size warning): pip uninstall monai-deploy-app-sdk holoscan-cu13 holoscan-cli; it belongs in "
        ".venv-deploy (bash apps/deploy/setup_env.sh)")
    assert "stack size" not in proc.stderr, proc.stderr

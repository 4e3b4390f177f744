"""The MONAI Deploy app's tests. They run in the deploy environment only:

    bash apps/deploy/setup_env.sh && .venv-deploy/bin/python -m pytest tests/deploy

That environment has the MONAI Deploy App SDK and Holoscan, and ``apps/deploy`` on its path (so ``import operators``
is the app's operators package). With another python (no SDK) the whole folder is skipped at collection, with that
reason: the core's environment does not carry the SDK (it would slow every ``import monai``; docs/setup.md).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

SKIP_REASON = (
    "tests/deploy skipped: this python lacks the MONAI Deploy App SDK or apps/deploy on its path; the Deploy app has "
    "its own environment: bash apps/deploy/setup_env.sh && .venv-deploy/bin/python -m pytest tests/deploy"
)


def _deploy_environment() -> bool:
    """The SDK's distribution and the app's ``operators`` package, looked up without importing either (importing
    ``monai.deploy`` loads Holoscan)."""
    try:
        importlib.metadata.version("monai-deploy-app-sdk")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("operators") is not None


if not _deploy_environment():
    # not a module-level pytest.skip: that is an error when this folder is given on the command line
    collect_ignore_glob = ["*.py"]

    def pytest_report_header(config):
        return SKIP_REASON

    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(SKIP_REASON)

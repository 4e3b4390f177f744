"""The app serves working copies of the bundles, so that training never writes into the repository.

``<model_dir>/<name>/`` (default ``apps/label/model/<name>``) is created from the source bundle (``--conf bundles
DIR``, default the repository's ``bundles/`` or ``$PNEUMONITOR_BUNDLES``): its ``configs/`` are refreshed at every
start (they are code), its ``models/`` are copied only when the working copy has no weights yet (they are state:
trained by this app, promoted only when better on validation). A promotion writes the trained ``network_def`` and
``image_size`` into the working copy's ``inference.json``, sets the severity rule and probability source back to the
paper's and drops the named operating points and ensemble record of the old weights
(:func:`pneumonitor.networks.serve_trained_weights`); a refresh keeps those keys
(:data:`pneumonitor.networks.bundle.SERVED_WEIGHTS_KEYS`) as the working copy has them, with the weights they
describe: a restart must not give promoted weights the source's extent-head rule (their head was never fitted).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pneumonitor.networks.bundle import SERVED_WEIGHTS_KEYS, read_inference_config, update_inference_config

logger = logging.getLogger(__name__)


def prepare_bundle(source: Path, target: Path) -> Path:
    """Create or refresh the working copy ``target`` of the bundle ``source``; returns ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    trained = None
    if (target / "models" / "model.pt").is_file() and (target / "configs" / "inference.json").is_file():
        config = read_inference_config(target)
        trained = {k: config[k] for k in SERVED_WEIGHTS_KEYS if k in config}
    if (source / "configs").is_dir():
        shutil.copytree(source / "configs", target / "configs", dirs_exist_ok=True)
        if trained:
            update_inference_config(target, remove=[k for k in SERVED_WEIGHTS_KEYS if k not in trained], **trained)
    else:
        logger.warning("bundle %s has no configs/ folder", source)
    for extra in ("docs", "LICENSE"):
        if (source / extra).is_dir():
            shutil.copytree(source / extra, target / extra, dirs_exist_ok=True)
        elif (source / extra).is_file():
            shutil.copyfile(source / extra, target / extra)
    (target / "models").mkdir(exist_ok=True)
    weights = source / "models" / "model.pt"
    if weights.is_file() and not (target / "models" / "model.pt").is_file():
        shutil.copyfile(weights, target / "models" / "model.pt")
        logger.info("copied %s into %s", weights, target)
    if not (target / "models" / "model.pt").is_file():
        logger.warning(
            "no trained weights in %s: its infer task is not served until a training run or a copied model.pt "
            "provides them", target / "models" / "model.pt",
        )
    return target

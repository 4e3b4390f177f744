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

Weights this app never promoted follow the repository: ``models/source_weights.sha256`` records the digest of the
source weights a working copy was copied from; at a start, a working copy still holding those (or the source's own)
weights takes the source's current weights and all of its configs, so a repository update (new weights, or new
operating points for the same weights) reaches it without deleting it. Promoted weights stay, whatever the
repository ships (logged).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pneumonitor.networks.bundle import (SERVED_WEIGHTS_KEYS, read_inference_config, update_inference_config,
                                        weights_sha256)

logger = logging.getLogger(__name__)


SOURCE_WEIGHTS_RECORD = "source_weights.sha256"


def prepare_bundle(source: Path, target: Path) -> Path:
    """Create or refresh the working copy ``target`` of the bundle ``source``; returns ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "models").mkdir(exist_ok=True)
    weights, working = source / "models" / "model.pt", target / "models" / "model.pt"
    record = target / "models" / SOURCE_WEIGHTS_RECORD
    source_digest, working_digest = (weights_sha256(p) if p.is_file() else None for p in (weights, working))
    copied_from = record.read_text().strip() if record.is_file() else None
    # weights a training run promoted here: neither the source's nor the ones copied from it
    promoted = working_digest is not None and working_digest not in (source_digest, copied_from)
    trained = None
    if promoted and (target / "configs" / "inference.json").is_file():
        config = read_inference_config(target)
        trained = {k: config[k] for k in SERVED_WEIGHTS_KEYS if k in config}
        if source_digest is not None and source_digest != copied_from:
            logger.info("%s holds weights promoted by this app: the newer weights of %s are not served (delete %s to "
                        "serve them)", target, source, working)
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
    if source_digest is not None and not promoted:
        if working_digest != source_digest:
            partial = working.with_suffix(".partial")  # a killed start leaves no half-copied model.pt
            shutil.copyfile(weights, partial)
            partial.replace(working)
            logger.info("%s %s into %s", "updated from" if working_digest else "copied", weights, target)
        record.write_text(source_digest + "\n")
    if not working.is_file():
        logger.warning(
            "no trained weights in %s: its infer task is not served until a training run or a copied model.pt "
            "provides them", working,
        )
    return target

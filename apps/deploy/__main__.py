"""``python apps/deploy -i DICOM_DIR -o OUT_DIR [-m MODELS_DIR]``; exit status 0 when at least one radiograph was
analysed, 1 when none could be (every input skipped or failed), 2 when the models are missing."""

from __future__ import annotations

import logging
import sys

# `python apps/deploy` (and a MAP's `python /opt/holoscan/app`) puts this folder first on sys.path: app.py and the
# operators package beside it import as top-level modules, as in the MONAI Deploy SDK's example apps
from app import PneumonitorApp
from operators.models import ModelsNotFound


def main() -> int:
    app = PneumonitorApp()  # Holoscan reads sys.argv itself (an explicit argv list loses its first option)
    try:
        app.run()
    except ModelsNotFound as exc:
        logging.getLogger("pneumonitor.deploy").error("%s", exc)
        return 2
    store = getattr(app, "store", None)
    return 0 if store is not None and store.counts.get("ok", 0) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""pneumonitor's MONAI Label app: annotators refine pneumonia masks, DLNet and LSNet learn from them.

This module only assembles; the parts live in ``lib/``:

- infer tasks ``lungs`` (LSNet) and ``pneumonia`` (DLNet + LSNet), :mod:`lib.infers`;
- trainers ``dlnet`` and ``lsnet`` (bundle training, validated promotion), :mod:`lib.trainers`;
- strategies ``random``, ``first``, ``epistemic`` (MC dropout), ``boxes``, :mod:`lib.activelearning`;
- datastores: a local folder of radiographs, or DICOMweb (Orthanc), :mod:`lib.datastore`, :mod:`lib.dicomweb`.

Start it with ``apps/label/start_server.sh`` (binds 127.0.0.1); ``--conf`` keys:

====================  ============================================================================================
``bundles``           folder with the source ``dlnet``/``lsnet`` bundles (default: the repository's ``bundles/``)
``model_dir``         where the served working copies live (default ``apps/label/model``)
``dlnet_train_configs``, ``lsnet_train_configs``  override configs added to ``train.json`` (e.g. ``train_cpu.json``)
``dlnet_max_epochs``, ``lsnet_max_epochs``        default epochs of a training request (30)
``epistemic_passes``  MC-dropout passes per image (20); ``epistemic_max_images``: images scored per request (200)
``modalities``        DICOMweb modalities listed (``DX,CR``)
``cors_origins``      origins allowed cross-origin requests, comma-separated (default none: OHIF at ``/ohif`` is
                      same-origin). MONAI Label's own default lets any origin in, with credentials, and its
                      ``MONAI_LABEL_CORS_ORIGINS`` setting stops ``monailabel start_server`` (0.8.5) at start-up.
``ohif``              the OHIF build served at ``/ohif/`` (default ``apps/label/ohif/dist``, made by
                      ``apps/label/ohif/build.sh``: OHIF 3.12 with the radiograph MONAI Label mode); without it the
                      OHIF bundled in MONAI Label 0.8.5 is served, whose MONAI Label mode cannot show a DX/CR
====================  ============================================================================================

Only images of the datastore are analysed, named by id: an unknown id, a server path or an unknown model is 404.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.activelearning.first import First

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:  # MONAI Label imports main.py by path; lib/ must be importable for its subprocesses
    sys.path.insert(0, str(APP_DIR))

from lib.activelearning import Random  # noqa: E402
from lib.boxes import BoxesInRequest  # noqa: E402
from lib.configs import DLNetConfig, LSNetConfig, prepare_bundle  # noqa: E402
from lib.datastore import RadiographDatastore  # noqa: E402
from lib.labels import LABELS  # noqa: E402

logger = logging.getLogger(__name__)


def _server_layer(kind: type) -> Any:
    """The layer of type ``kind`` in the running MONAI Label server's middleware stack, or ``None`` (no server in
    this process). The stack is built before the app is created (in the server's lifespan), so the app adjusts
    the built layers in place."""
    server = sys.modules.get("monailabel.app")
    layer = getattr(getattr(server, "app", None), "middleware_stack", None)
    while layer is not None and not isinstance(layer, kind):
        layer = getattr(layer, "app", None)
    return layer


def restrict_cors(origins: list[str]) -> bool:
    """Re-initialise the server's CORS middleware with ``origins`` (credentials kept); False without a server."""
    from starlette.middleware.cors import CORSMiddleware

    layer = _server_layer(CORSMiddleware)
    if layer is None:
        return False
    layer.__init__(layer.app, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"])
    logger.info("cross-origin requests allowed from: %s", ", ".join(origins) or "no origin")
    return True


def answer_invalid_json_with_422() -> bool:
    """MONAI Label's endpoints parse their ``params``/``info`` form fields with ``json.loads`` and answered 500 to
    invalid JSON; the server's exception middleware now answers 422 with the parser's message."""
    import json

    from fastapi.responses import JSONResponse
    from starlette.middleware.exceptions import ExceptionMiddleware

    layer = _server_layer(ExceptionMiddleware)
    if layer is None:
        return False

    async def invalid_json(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": f"invalid JSON in the request: {exc}"})

    layer.add_exception_handler(json.JSONDecodeError, invalid_json)
    return True


def serve_ohif_build(dist: Path) -> bool:
    """Serve the OHIF build in ``dist`` at ``/ohif/`` in place of the one bundled in MONAI Label; False without a
    server in this process or without a build (then the bundled OHIF stays, with a warning).

    A route placed first in the server's router shadows MONAI Label's ``/ohif/{path}`` (routes are looked up per
    request, so the already built middleware stack does not matter). Same rules as the bundled route: MONAI Label's user role, and any path
    that is not a file of the build answers ``index.html`` (OHIF's client-side routes such as ``/ohif/monai-label``).
    """
    server = sys.modules.get("monailabel.app")
    app = getattr(server, "app", None)
    if app is None:
        return False
    index_html = dist / "index.html"
    if not index_html.is_file():
        logger.warning("no OHIF build in %s (bash apps/label/ohif/build.sh): /ohif/ serves MONAI Label's bundled OHIF, "
                       "whose MONAI Label mode cannot show single-frame radiographs", dist)
        return False
    from fastapi import Depends
    from fastapi.responses import FileResponse
    from fastapi.routing import APIRoute
    from monailabel.config import settings
    from monailabel.endpoints.user.auth import RBAC, User

    root = dist.resolve()
    index_html = root / "index.html"
    # ES modules (the pneumonitor mode and extension) must come with a JavaScript type; wasm codecs with theirs
    media_types = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}

    async def get_ohif_build(path: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        target = (root / path).resolve() if path else index_html
        if not target.is_file() or root not in target.parents:
            target = index_html
        headers = {"Cache-Control": "no-cache"} if target == index_html or target.name == "app-config.js" else None
        return FileResponse(target, media_type=media_types.get(target.suffix), headers=headers)

    # routes match in order: the first one shadows MONAI Label's /ohif/ route, however its router includes it
    routes = app.router.routes
    routes[:] = [r for r in routes if getattr(r, "name", None) != "ohif_build"]
    routes.insert(0, APIRoute("/ohif/{path:path}", get_ohif_build, methods=["GET"], name="ohif_build",
                              include_in_schema=False))
    version = root / "OHIF_VERSION"
    logger.info("/ohif/ serves %s (%s)", root, version.read_text().strip() if version.is_file() else "version unknown")
    return True


def _source_bundles(conf: dict[str, str]) -> Path:
    if conf.get("bundles"):
        return Path(conf["bundles"]).resolve()
    from pneumonitor.inference.analyzer import default_bundle_dir

    return default_bundle_dir("dlnet").parent


class PneumonitorLabelApp(BoxesInRequest, MONAILabelApp):
    """Assembles datastore, infer tasks, trainers, strategies and scoring methods from ``lib.configs``."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = conf or {}
        restrict_cors([o.strip().rstrip("/") for o in conf.get("cors_origins", "").split(",") if o.strip()])
        answer_invalid_json_with_422()
        serve_ohif_build(Path(conf.get("ohif") or APP_DIR / "ohif" / "dist").resolve())
        source = _source_bundles(conf)
        model_dir = Path(conf.get("model_dir") or Path(app_dir) / "model").resolve()
        lsnet = prepare_bundle(source / "lsnet", model_dir / "lsnet")
        dlnet = prepare_bundle(source / "dlnet", model_dir / "dlnet")
        self.configs = [LSNetConfig(lsnet, conf), DLNetConfig(dlnet, lsnet, conf)]
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="pneumonitor",
            description="Pneumonia and lung masks on chest radiographs (DLNet + LSNet, Amer et al. 2020)",
            version="1.0",
            # a list: OHIF's MONAI Label panel appends the models' label names to it
            labels=list(LABELS),
        )

    # -- datastores ------------------------------------------------------------------------------------------
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return self.init_remote_datastore()
        from monailabel.config import settings

        return RadiographDatastore(
            self.studies,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_remote_datastore(self) -> Datastore:
        from lib.dicomweb import make_dicomweb_datastore

        self.studies = self.studies.rstrip("/")
        modalities = [m.strip() for m in self.conf.get("modalities", "DX,CR").split(",") if m.strip()]
        return make_dicomweb_datastore(self.studies, modalities)

    # -- requests --------------------------------------------------------------------------------------------
    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's ``infer`` for images of the datastore only, named by id.

        MONAI Label's own resolves an unknown id to ``""`` (read as the server's working directory: another image's
        result) and takes any existing server path as the image; both are answered 404 here, as is an unknown model.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"no model {model!r}; models: {', '.join(sorted(self._infers))}")
        image = request.get("image")
        if isinstance(image, str):
            store = datastore if datastore else self.datastore()
            uri = store.get_image_uri(image) if image else ""
            if not uri or not os.path.exists(uri):
                raise HTTPException(status_code=404, detail=f"image {image!r} is not in the datastore")
        return super().infer(request, datastore)

    # -- tasks -----------------------------------------------------------------------------------------------
    def init_infers(self) -> dict[str, Any]:
        return {name: task for config in self.configs for name, task in config.infer().items()}

    def init_trainers(self) -> dict[str, Any]:
        return {name: task for config in self.configs for name, task in config.trainer().items()}

    def init_strategies(self) -> dict[str, Any]:
        strategies: dict[str, Any] = {"random": Random(), "first": First()}
        for config in self.configs:
            strategies.update(config.strategy())
        return strategies

    def init_scoring_methods(self) -> dict[str, Any]:
        return {name: m for config in self.configs for name, m in config.scoring_method().items()}

#!/usr/bin/env bash
# Create the MONAI Label environment of pneumonitor: a venv of its own (default .venv-label/ at the repo root).
#
# Why a separate environment: monailabel 0.8.5 needs pydicom < 3 (its server dies on pydicom 3), numpy < 2 and
# torchvision (its bundle infer task imports it), while the core package uses pydicom 3 and numpy 2.
# pneumonitor itself is installed with --no-deps on top, so that pip does not pull the core's pins back in.
#
# Usage: bash apps/label/setup_env.sh [VENV_DIR]        (idempotent: re-running only checks/upgrades to the pins)
set -euo pipefail

DEFAULT_VENV=.venv-label
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/venv.sh"  # ROOT, VENV, PYTHON; creates the venv

# torch/torchvision: the releases whose wheels lie on this machine's disk (an unpinned torch pulls a multi-GB build
# from the network). They are CUDA builds and run on CPU too.
# monailabel's own requirements, minus what this app never uses and what would pull a second torch at build time:
# sam2 (its sdist builds against a fresh torch), numpymaxflow (scribbles), mlflow/openslide/lmdb/gdown (tracking,
# pathology, downloads). monailabel itself is then installed with --no-deps.
PINS=(
  "monai[ignite,itk,nibabel,pillow,psutil,skimage,tensorboard,tqdm]==1.6.1"
  "torch==2.14.1"
  "torchvision==0.29.1"
  "pydicom==2.4.4"
  "numpy==1.26.4"
  "pylibjpeg==2.0.1"
  "pylibjpeg-libjpeg>=2.1,<2.3"
  "pylibjpeg-openjpeg>=2.3,<2.4"
  "highdicom==0.22.0"
  "pydicom-seg==0.4.1"
  "dicomweb-client[gcp]>=0.59.1"
  "pynetdicom>=2.0.2"
  "pynrrd>=1.0.0"
  "uvicorn>=0.29.0"
  "fastapi>=0.110.2"
  "pydantic>=2.7.0"
  "pydantic-settings>=2.2.1"
  "python-dotenv>=1.0.1"
  "python-multipart>=0.0.9"
  "httpx>=0.27.0"
  "schedule>=1.2.1"
  "timeloop>=1.0.2"
  "expiringdict>=1.2.2"
  "expiring_dict>=1.1.0"
  "cachetools>=5.3.3"
  "watchdog>=4.0.0"
  "girder-client>=3.2.3"
  "einops>=0.7.0"
  "filelock>=3.11.0"
  "passlib>=1.7.4"
  "pyjwt>=2.8.0"
  "bcrypt>=4.1.2"
  "shapely>=2.0.4"
  "requests>=2.31.0"
  "requests-toolbelt>=1.0.0"
  "urllib3>=2.2.1"
  "scikit-learn"
  "SimpleITK>=2.3"
  "scikit-image>=0.22,<0.26"
  "scipy>=1.11,<1.16"
  "pandas>=2.1,<2.3"
  "matplotlib>=3.8,<3.11"
  "nibabel>=5.0"
  "pillow>=10"
  "tqdm>=4.60"
  "pyyaml>=6"
  "pytest>=8"
)

"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" wheel
"$VENV/bin/python" -m pip install "${PINS[@]}"
"$VENV/bin/python" -m pip install --no-deps "monailabel==0.8.5"
"$VENV/bin/python" -m pip install --no-deps -e "$ROOT"
"$VENV/bin/python" - <<'PY'
import monailabel, monai, pydicom, numpy, torch, torchvision
import pneumonitor.inference.analyzer  # noqa: F401 - the core must import under pydicom 2 / numpy 1
print(f"label env ok: monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, pydicom {pydicom.__version__}, numpy {numpy.__version__}")
PY

"""Train the image QC bundle (``bundles/qc``): see :mod:`pneumonitor.qc.training`.

    OMP_NUM_THREADS=1 python scripts/train_qc.py [--data ../shared/data] [--epochs 12] [--seed 18]
"""

import sys

from pneumonitor.qc.training import main

if __name__ == "__main__":
    sys.exit(main())

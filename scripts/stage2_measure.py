#!/usr/bin/env python
"""Stage-2 measurement table: Dice/IoU of the box mask, the DLNet-1 heatmap, the Grad-CAM proposal and the DLNet-2
heatmap against the radiologist masks. The measurement is :mod:`pneumonitor.stage2.measure` (options: ``--help``).

    python scripts/stage2_measure.py --datalist DATALIST.json --dlnet1 bundles/dlnet/models/model.pt \
        --dlnet2 bundles/dlnet/models/stage2/model.pt --out reports/stage2
"""

import sys

from pneumonitor.stage2.measure import main

if __name__ == "__main__":
    sys.exit(main())

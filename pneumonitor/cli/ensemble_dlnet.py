"""``pneumonitor ensemble-dlnet``: combine trained DLNet bundles into one bundle that averages their probabilities.

The first bundle is the localization member: its heatmap, extent head, severity rule, docs and train configs are the
ensemble's (``--localization-member`` picks another). The ensemble's input is the largest member's; a smaller member
gets it area-averaged to its own size (pneumonitor.networks.ensemble). Choose the ensemble's classification threshold
on validation afterwards:

    pneumonitor ensemble-dlnet bundles/dlnet runs/dlnet-gpu --out runs/dlnet-ensemble
    pneumonitor analyze VALIDATION_IMAGES --dlnet runs/dlnet-ensemble --out runs/ens_val
    pneumonitor evaluate --results runs/ens_val --reference datalist.json --split validation \\
        --save-operating-point runs/dlnet-ensemble
"""

from __future__ import annotations

import argparse
import sys

from pneumonitor.cli import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "ensemble-dlnet", run, description=__doc__,
                         help="combine DLNet bundles into one (mean probability, one member's heatmap and extent head)")
    parser.add_argument("bundles", nargs="+", help="DLNet bundle folders (at least two)")
    parser.add_argument("--out", required=True, help="folder of the ensemble bundle (created or updated)")
    parser.add_argument("--localization-member", type=int, default=0,
                        help="index of the member whose heatmap and extent head are used (default 0)")
    parser.add_argument("--weights", default=None,
                        help="comma-separated weights of the members' probabilities (default: equal)")


def run(args: argparse.Namespace) -> int:
    from pneumonitor.networks import WeightsNotFound, combine_dlnet_bundles

    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
        written = combine_dlnet_bundles(args.bundles, args.out, args.localization_member, weights)
    except (ValueError, WeightsNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written}: {len(args.bundles)} members; choose its classification threshold on validation "
          "(pneumonitor evaluate --split validation --save-operating-point)")
    return 0

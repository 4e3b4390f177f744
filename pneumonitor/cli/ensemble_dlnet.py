"""``pneumonitor ensemble-dlnet``: combine trained DLNet bundles into one bundle that averages their probabilities.

The first bundle is the localization member: its heatmap, extent head, severity rule, docs and train configs are the
ensemble's (``--localization-member`` picks another). The ensemble's input is the largest member's; a smaller member
gets it area-averaged to its own size (pneumonitor.networks.ensemble). Choose the ensemble's classification threshold
on validation afterwards:

    pneumonitor ensemble-dlnet bundles/dlnet runs/dlnet-gpu --out runs/dlnet-ensemble
    pneumonitor analyze VALIDATION_IMAGES --dlnet runs/dlnet-ensemble --out runs/ens_val
    pneumonitor evaluate --results runs/ens_val --reference datalist.json --split validation \\
        --save-operating-point runs/dlnet-ensemble

With one ensemble bundle and ``--member I`` it does the inverse: member I as a bundle of its own (its network, input
size and weights; the ensemble's thresholds dropped), e.g. to refit its extent head or to continue its training:

    pneumonitor ensemble-dlnet bundles/dlnet --member 0 --out runs/member0
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
    parser.add_argument("--member", type=int, default=None,
                        help="with one ensemble bundle: write this member as a bundle of its own (the inverse)")


def run(args: argparse.Namespace) -> int:
    from pneumonitor.networks import WeightsNotFound, combine_dlnet_bundles
    from pneumonitor.networks.bundle import split_dlnet_ensemble

    try:
        if args.member is not None:
            if len(args.bundles) != 1:
                raise ValueError("--member takes one ensemble bundle")
            written = split_dlnet_ensemble(args.bundles[0], args.member, args.out)
            what = f"member {args.member} of {args.bundles[0]}; choose its thresholds"
        else:
            weights = [float(w) for w in args.weights.split(",")] if args.weights else None
            written = combine_dlnet_bundles(args.bundles, args.out, args.localization_member, weights)
            what = f"{len(args.bundles)} members; choose its classification threshold"
    except (ValueError, WeightsNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written}: {what} on validation (pneumonitor evaluate --split validation --save-operating-point)")
    return 0

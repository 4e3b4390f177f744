#!/usr/bin/env python
"""Benchmark of ``pneumonitor analyze``: stage times, images/s, peak memory, and the ratio to pure forward passes.

For each network configuration (the shipped bundles when present, the compact CPU configuration and the paper's
configuration, random weights for the latter two: speed does not depend on the weights) it runs, in one process:

1. the end-to-end pipeline (decode -> CLAHE/resize -> DLNet -> LSNet -> severity -> writing PNGs) over N images
   (the real DICOM samples repeated), with the stage breakdown;
2. the pure forward passes of the same two networks on the same number of pre-made input tensors, same batch size;
3. MC-dropout (``--mc-samples``, one image): ``Analyzer.mc_dropout`` (backbones once, classification heads per
   sample) against as many whole DLNet passes (what MC-dropout costs without that);

and prints images/s of both, each stage's share (thread-seconds: decoding/preprocessing and writing overlap the
networks, so the shares add up to more than the wall time), the peak resident memory (and CUDA peak), and end-to-end / forward.
Each configuration runs in its own child process so that the memory peaks do not mix.

    python scripts/bench_analyze.py                    # N=16 on CPU, all configurations
    python scripts/bench_analyze.py --device cuda --images 512 --batch-size 32
    python scripts/bench_analyze.py --smoke            # 2 images, compact configuration only (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    # name: (DLNet kwargs, DLNet input, LSNet kwargs, LSNet input)
    "compact": ({"backbone": "resnet18"}, 224, {"width": 0.25}, 256),
    "paper": ({"backbone": "resnet50"}, 448, {"width": 1.0}, 448),
}
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr-dicom-samples"


def _inputs(count: int, folder: Path) -> list[Path]:
    """The real DICOM samples (frontal chests only) repeated to ``count`` files."""
    samples = [p for p in sorted(SAMPLES.glob("*.dcm")) if p.name != "dx_image.dcm"]
    if not samples:
        raise SystemExit(f"no DICOM samples in {SAMPLES}")
    paths = []
    for index in range(count):
        target = folder / f"img{index:05d}.dcm"
        target.write_bytes(samples[index % len(samples)].read_bytes())
        paths.append(target)
    return paths


def _networks(name: str, folder: Path):
    import torch

    from pneumonitor.networks import DLNet, LSNet, load_bundle, save_bundle
    from pneumonitor.inference.analyzer import default_bundle_dir

    if name == "shipped":
        return load_bundle(default_bundle_dir("dlnet"), kind="DLNet"), load_bundle(default_bundle_dir("lsnet"), kind="LSNet")
    dl_args, dl_size, ls_args, ls_size = CONFIGS[name]
    torch.manual_seed(0)
    dl, ls = DLNet(**dl_args), LSNet(**ls_args)
    with torch.no_grad():  # a lung everywhere keeps every image on the full path (no "no lung" skips)
        ls.head.bias.fill_(5.0)
    return load_bundle(save_bundle(dl, folder / "dl", [dl_size, dl_size])), load_bundle(
        save_bundle(ls, folder / "ls", [ls_size, ls_size]))


def run_one(name: str, images: int, batch_size: int, device: str, workers: int | None, mc_samples: int = 8) -> dict:
    import torch

    from pneumonitor.inference.analyzer import Analyzer, analyze_to_folder, resolve_device

    torch_device = resolve_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = _inputs(images, folder)
        dlnet, lsnet = _networks(name, folder)
        analyzer = Analyzer(dlnet, lsnet, device=torch_device)
        # warm-up (allocator, cuDNN autotune, first-call overheads) on one batch, not timed
        list(analyzer.analyze(paths[:batch_size], batch_size=batch_size, progress=False, workers=0))
        analyzer.stage_seconds.clear()
        if torch_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        rows = analyze_to_folder(analyzer, paths, folder / "out", batch_size=batch_size, workers=workers, progress=False)
        ok = sum(row["status"] == "ok" for row in rows)
        end_to_end = time.perf_counter() - started
        stages = dict(analyzer.stage_seconds)  # before the pure-forward loop adds to it

        dl_shape = (batch_size, 3, *dlnet.image_size)
        ls_shape = (batch_size, 1, *lsnet.image_size)
        dl_in = torch.randn(dl_shape, device=torch_device)
        ls_in = torch.randn(ls_shape, device=torch_device)
        batches = -(-images // batch_size)
        with torch.inference_mode():
            started = time.perf_counter()
            for _ in range(batches):
                analyzer.infer(dl_in, ls_in)
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            forward = time.perf_counter() - started
            one = dl_in[:1]
            analyzer.mc_dropout(one, samples=1)  # warm-up
            started = time.perf_counter()
            analyzer.mc_dropout(one, samples=mc_samples, seed=0)
            mc = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(mc_samples):
                dlnet.network(one)
            mc_whole = time.perf_counter() - started
    return {
        "config": name,
        "device": str(torch_device),
        "images": images,
        "ok": ok,
        "batch_size": batch_size,
        "dlnet_input": list(dlnet.image_size),
        "lsnet_input": list(lsnet.image_size),
        "end_to_end_s": end_to_end,
        "end_to_end_img_s": images / end_to_end,
        "forward_s": forward,
        "forward_img_s": batches * batch_size / forward,
        "ratio_end_to_end_to_forward": end_to_end / (forward * images / (batches * batch_size)),
        "stage_seconds_end_to_end": stages,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_peak_mib": (torch.cuda.max_memory_allocated() / 2**20) if torch_device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "mc_samples": mc_samples,
        "mc_dropout_s": mc,
        "mc_whole_passes_s": mc_whole,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--mc-samples", type=int, default=8, help="MC-dropout samples timed on one image (default 8)")
    parser.add_argument("--configs", nargs="+", default=None, help="shipped, compact, paper (default: all available)")
    parser.add_argument("--smoke", action="store_true", help="2 images, compact only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_one(args.child, args.images, args.batch_size, args.device, args.workers, args.mc_samples)
        print("RESULT " + json.dumps(result))
        return 0

    if args.smoke:
        args.images, args.batch_size, configs = 2, 2, ["compact"]
    else:
        from pneumonitor.inference.analyzer import default_bundle_dir

        shipped = (default_bundle_dir("dlnet") / "models" / "model.pt").is_file() and (
            default_bundle_dir("lsnet") / "models" / "model.pt"
        ).is_file()
        configs = args.configs or (["shipped"] if shipped else []) + list(CONFIGS)
    results = []
    for name in configs:
        command = [sys.executable, __file__, "--child", name, "--images", str(args.images), "--batch-size",
                   str(args.batch_size), "--device", args.device, "--mc-samples", str(args.mc_samples)]
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(lines[-1][len("RESULT "):]))

    header = (f"{'config':8} {'device':6} {'N':>4} {'batch':>5} {'e2e img/s':>10} {'fwd img/s':>10} {'e2e/fwd':>8} "
              f"{'peak RSS MiB':>12} {'MC s / passes s':>16}  stage shares (end to end)")
    print(header)
    for r in results:
        total = sum(r["stage_seconds_end_to_end"].values()) or 1.0
        shares = " ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(r["stage_seconds_end_to_end"].items()))
        print(f"{r['config']:8} {r['device']:6} {r['images']:>4} {r['batch_size']:>5} {r['end_to_end_img_s']:>10.2f} "
              f"{r['forward_img_s']:>10.2f} {r['ratio_end_to_end_to_forward']:>8.2f} {r['peak_rss_mib']:>12.0f} "
              f"{r['mc_dropout_s']:>7.2f} / {r['mc_whole_passes_s']:<6.2f}  {shares}")
    if args.json:
        from pneumonitor.publishing import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

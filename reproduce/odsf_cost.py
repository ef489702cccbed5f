"""Cost of the edge odsF evaluation of one map (common.metrics.edge_counts), the figure the README quotes.

    python -m reproduce.odsf_cost                          # 448x576 (NYUD), 19 and 99 thresholds
    python -m reproduce.odsf_cost --size 512x512 --max-dist 0.0075 --repeats 1

Synthetic inputs of the real size (no dataset files): the ground truth is the boundary map of a
random partition into --regions Voronoi cells (4-neighbour label changes, 1-2 pixels wide, as a
label-derived edge map); two predictions are timed, "band" (the ground truth blurred by a box
filter of half-width 3 and scaled to [0, 1], shaped like a trained network's output) and "noise"
(uniform random probabilities, closer to an untrained network). Prints, per threshold count, the
seconds per map (wall: time.perf_counter; CPU: time.process_time, which a busy shared machine
inflates less; the fastest of --repeats each) and the odsF of that one map.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.metrics import EDGE_MAX_DIST_NYUD, edge_counts, edge_thresholds, ods_f  # noqa: E402


def synthetic_maps(H: int, W: int, regions: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(ground truth (H, W) 0/1, {name: prediction (H, W) in [0, 1]}) as described in the module docstring."""
    rng = np.random.default_rng(seed)
    centres = rng.random((regions, 2)) * (H, W)
    yy, xx = np.mgrid[:H, :W]
    label = np.argmin((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, axis=-1)
    gt = np.zeros((H, W), dtype=bool)
    gt[:-1] |= label[:-1] != label[1:]
    gt[:, :-1] |= label[:, :-1] != label[:, 1:]
    k = 3
    c = np.pad(gt.astype(np.float64), k).cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0)))
    s = 2 * k + 1
    box = c[s:, s:] - c[:-s, s:] - c[s:, :-s] + c[:-s, :-s]
    band = box / box.max()
    noise = rng.random((H, W))
    return torch.from_numpy(gt.astype(np.float32)), {"band": torch.from_numpy(band), "noise": torch.from_numpy(noise)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="448x576", help="HxW of the map (default 448x576, NYUD)")
    ap.add_argument("--max-dist", type=float, default=EDGE_MAX_DIST_NYUD,
                    help=f"tolerance as a fraction of the diagonal (default {EDGE_MAX_DIST_NYUD}, NYUD)")
    ap.add_argument("--thresholds", default="19,99", help="comma-separated threshold counts (default 19,99)")
    ap.add_argument("--regions", type=int, default=40, help="Voronoi cells of the ground truth (default 40)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats, the fastest is printed (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        H, W = (int(v) for v in args.size.lower().split("x"))
        counts = [int(v) for v in args.thresholds.split(",")]
        if H < 1 or W < 1 or min(counts) < 1 or args.repeats < 1 or args.regions < 2:
            raise ValueError
    except ValueError:
        print(f"odsf_cost: error: bad --size {args.size!r} / --thresholds {args.thresholds!r} / --repeats / --regions "
              "(want HxW, positive counts, repeats >= 1, regions >= 2)", file=sys.stderr)
        return 2
    gt, preds = synthetic_maps(H, W, args.regions, args.seed)
    print(f"map {H}x{W}, ground truth {int(gt.sum())} px, tolerance {args.max_dist} x diagonal "
          f"= {args.max_dist * float(np.hypot(H, W)):.2f} px, torch threads {torch.get_num_threads()}")
    print("| prediction | thresholds | wall s per map | CPU s per map | odsF of the map |")
    print("| --- | --- | --- | --- | --- |")
    for name, prob in preds.items():
        for K in counts:
            wall = cpu = float("inf")
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                c = edge_counts(prob, gt, edge_thresholds(K), args.max_dist)
                wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
            print(f"| {name} | {K} | {wall:.2f} | {cpu:.2f} | {ods_f(*c)[0]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

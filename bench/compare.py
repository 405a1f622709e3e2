#!/usr/bin/env python3
"""kiln against PyTorch on the same model, batches and threads, interleaved:
each round runs `kiln bench --json` and `bench/pytorch_lenet.py --json` (the
order alternating from round to round), and the ratio of the two is taken within the round. On a shared machine whose
speed drifts within minutes, the median of per-round ratios is the figure to
quote; the spread of the rounds says how much to trust it.

    python3 bench/compare.py [--rounds 5] [--batch 4,64,256] [--threads 2] [--seconds 1]

Needs a release build of kiln (`cargo build --release`) and a Python with
torch for bench/pytorch_lenet.py (`--python` picks it; default: this one).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", default="4,64,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "lenet.net"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    common = ["--batch", args.batch, "--threads", str(args.threads), "--seconds", str(args.seconds), "--json"]
    kiln_rates, torch_rates, ratios = {}, {}, {}
    peaks, kernel_share = [], {}
    for r in range(args.rounds):
        # Alternate which runs first: on these machines the first of two
        # back-to-back processes is sometimes consistently slower.
        kiln_cmd = [args.kiln, "bench", args.model] + common
        torch_cmd = [args.python, os.path.join(HERE, "pytorch_lenet.py")] + common
        if r % 2 == 0:
            k, p = run_json(kiln_cmd), run_json(torch_cmd)
        else:
            p, k = run_json(torch_cmd), run_json(kiln_cmd)
        theirs = {(x["batch"], x["mode"]): x["images_per_s"] for x in p["results"]}
        peaks.append(k["peak_gflops"])
        for x in k["results"]:
            key = (x["batch"], x["mode"])
            if key in theirs:
                kiln_rates.setdefault(key, []).append(x["images_per_s"])
                torch_rates.setdefault(key, []).append(theirs[key])
                ratios.setdefault(key, []).append(x["images_per_s"] / theirs[key])
        for kern in k["kernels"]:
            if kern["batch"] == 64 and kern["mode"] == "train" and kern["flops"] > 5e6:
                kernel_share.setdefault(kern["name"], []).append(100 * kern["gflops"] / k["peak_gflops"])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'batch':>5} {'mode':>6} {'kiln img/s':>11} {'torch img/s':>12} {'ratio (median)':>15}  per-round ratios")
    for key in sorted(ratios):
        rs = ratios[key]
        print(f"{key[0]:>5} {key[1]:>6} {statistics.median(kiln_rates[key]):>11.0f} "
              f"{statistics.median(torch_rates[key]):>12.0f} {statistics.median(rs):>15.2f}  "
              + " ".join(f"{x:.2f}" for x in rs))
    print(f"\nmeasured 128-bit FMA peak: {statistics.median(peaks):.1f} GFLOP/s (rounds: "
          + ", ".join(f"{x:.0f}" for x in peaks) + ")")
    print("batch-64 training kernels over 5 MFLOP, % of that round's peak (median; rounds):")
    for name, shares in kernel_share.items():
        print(f"  {name:28s} {statistics.median(shares):5.1f}  " + " ".join(f"{x:.0f}" for x in shares))


if __name__ == "__main__":
    main()

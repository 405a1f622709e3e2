#!/usr/bin/env python3
"""The lecture's LeNet in PyTorch, measured like `kiln bench`: training
images/s (zero_grad, forward, cross-entropy, backward, SGD step with lr 0.001
and momentum 0.9) on pre-batched in-memory tensors, and inference images/s
(eval, no_grad). Run it next to `kiln bench examples/lenet.net` with the same
batches and thread count, interleaved, and compare ratios.

    python3 bench/pytorch_lenet.py --batch 4,64,256 --threads 2 [--seconds 5] [--json]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.reshape(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def measure(step, batch, seconds):
    step()  # warm-up
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="4,64,256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for batch in [int(b) for b in args.batch.split(",")]:
        net = Net()
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        # Pre-batched tensors: 64 distinct batches cycled, as a loader would hand them over.
        xs = [torch.randn(batch, 3, 32, 32) for _ in range(64)]
        ys = [torch.randint(0, 10, (batch,)) for _ in range(64)]
        i = [0]

        def train_step():
            k = i[0] % 64
            i[0] += 1
            optimizer.zero_grad()
            loss = criterion(net(xs[k]), ys[k])
            loss.backward()
            optimizer.step()

        net.train()
        results.append({"batch": batch, "mode": "train", "images_per_s": measure(train_step, batch, args.seconds)})

        net.eval()

        def infer_step():
            k = i[0] % 64
            i[0] += 1
            with torch.no_grad():
                net(xs[k])

        results.append({"batch": batch, "mode": "infer", "images_per_s": measure(infer_step, batch, args.seconds)})
    if args.json:
        print(json.dumps({"framework": "pytorch " + torch.__version__, "threads": args.threads, "results": results}, indent=2))
    else:
        print(f"PyTorch {torch.__version__}, {args.threads} thread(s)")
        print(f"{'batch':>6} {'mode':>6} {'images/s':>14}")
        for r in results:
            print(f"{r['batch']:>6} {r['mode']:>6} {r['images_per_s']:>14.0f}")


if __name__ == "__main__":
    main()

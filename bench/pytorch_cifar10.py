#!/usr/bin/env python3
"""The lecture's whole CIFAR-10 run in PyTorch, to time and score next to
`cargo run --release --example cifar10 -- --data DIR` on the same machine:
per-sample ToTensor + Normalize(0.5, 0.5) in a DataLoader (batch 4, shuffled
each epoch, 2 workers), SGD with lr 0.001 and momentum 0.9, cross-entropy,
10 epochs, the test set evaluated after every epoch (as kiln's example does),
then the accuracy overall and per class.

Reads the official binary batches (`python3 ../shared/data/cifar10_to_bin.py
DIR` writes them), so torchvision is not needed; each sample is converted
when the loader asks for it, as torchvision's CIFAR10 dataset does.

    python3 bench/pytorch_cifar10.py --data DIR [--epochs 10] [--seed 0] [--threads 2]
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pytorch_lenet import Net

CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32


class CifarBinary(Dataset):
    """Records of the official binary layout: a label byte, then 3x32x32 bytes."""

    def __init__(self, root, train):
        folder = os.path.join(root, "cifar-10-batches-bin")
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        raw = np.concatenate([np.fromfile(os.path.join(folder, n), dtype=np.uint8) for n in names])
        if raw.size % RECORD:
            raise ValueError(f"{folder}: {raw.size} bytes is not a whole number of {RECORD}-byte records")
        records = raw.reshape(-1, RECORD)
        self.labels = records[:, 0].astype(np.int64)
        self.images = records[:, 1:].reshape(-1, 3, 32, 32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        # ToTensor (bytes / 255) then Normalize((0.5,)*3, (0.5,)*3).
        x = torch.from_numpy(self.images[i].astype(np.float32)).div_(255.0)
        return x.sub_(0.5).div_(0.5), int(self.labels[i])


def evaluate(net, loader):
    correct = [0] * 10
    total = [0] * 10
    with torch.no_grad():
        for x, y in loader:
            pred = net(x).argmax(1)
            for label, p in zip(y.tolist(), pred.tolist()):
                total[label] += 1
                correct[label] += int(label == p)
    return correct, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    train = DataLoader(CifarBinary(args.data, True), batch_size=4, shuffle=True, num_workers=args.workers)
    test = DataLoader(CifarBinary(args.data, False), batch_size=4, shuffle=False, num_workers=args.workers)
    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        running = 0.0
        for x, y in train:
            optimizer.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item()
        correct, total = evaluate(net, test)
        acc = 100.0 * sum(correct) / sum(total)
        print(f"epoch {epoch:2d}: train loss {running / len(train):.3f}, test accuracy {acc:.1f} % "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"Finished Training in {time.perf_counter() - start:.1f} s (including evaluation after each epoch)")
    correct, total = evaluate(net, test)
    print(f"Accuracy of the network on the 10000 test images: {100.0 * sum(correct) / sum(total):.1f} %")
    for name, c, t in zip(CLASSES, correct, total):
        print(f"Accuracy for class: {name:5s} is {100.0 * c / t:.1f} %")


if __name__ == "__main__":
    main()

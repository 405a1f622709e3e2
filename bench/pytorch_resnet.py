#!/usr/bin/env python3
"""The ResNet recipe of `examples/resnet.net` in PyTorch, to time and score
next to `kiln train` on the same machine and data:

    kiln train examples/resnet.net --data DIR --batch 128 --epochs 15 --lr 0.1 \\
        --momentum 0.9 --nesterov --weight-decay 5e-4 --label-smoothing 0.1 \\
        --schedule onecycle --augment crop=4,flip --normalize cifar10

The same net (a stem and three residual stages with batch normalisation, a
global average pool), SGD with Nesterov momentum and weight decay,
cross-entropy with label smoothing, OneCycleLR stepped per batch
(`cycle_momentum=False`, as kiln's schedule), random crop after 4-pixel
zero padding and horizontal flip for training only, per-channel CIFAR-10
normalisation, the test set evaluated after every epoch.

Reads the official binary batches (`python3 ../shared/data/cifar10_to_bin.py
DIR` writes them), so torchvision is not needed.

    python3 bench/pytorch_resnet.py --data DIR [--epochs 15] [--batch 128] [--threads 2]
"""
import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pytorch_cifar10 import CifarBinary

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)


class Augmented(Dataset):
    """ToTensor, then (training only) RandomCrop(32, padding=4) and
    RandomHorizontalFlip(), then Normalize(CIFAR-10 mean, std)."""

    def __init__(self, base, train):
        self.base, self.train = base, train

    def __len__(self):
        return len(self.base.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.base.images[i].astype(np.float32)).div_(255.0)
        if self.train:
            padded = F.pad(x, (4, 4, 4, 4))
            top, left = np.random.randint(0, 9, size=2)
            x = padded[:, top:top + 32, left:left + 32]
            if np.random.rand() < 0.5:
                x = x.flip(2)
        return (x - MEAN) / STD, int(self.base.labels[i])


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        conv = lambda i, o, k=3, s=1, p=1: nn.Conv2d(i, o, k, stride=s, padding=p, bias=False)
        self.stem, self.bn0 = conv(3, 32), nn.BatchNorm2d(32)
        self.c1a, self.bn1a, self.c1b, self.bn1b = conv(32, 32), nn.BatchNorm2d(32), conv(32, 32), nn.BatchNorm2d(32)
        self.c2a, self.bn2a = conv(32, 64, 3, 2, 1), nn.BatchNorm2d(64)
        self.c2b, self.bn2b = conv(64, 64), nn.BatchNorm2d(64)
        self.c2s, self.bn2s = conv(32, 64, 1, 2, 0), nn.BatchNorm2d(64)
        self.c3a, self.bn3a = conv(64, 128, 3, 2, 1), nn.BatchNorm2d(128)
        self.c3b, self.bn3b = conv(128, 128), nn.BatchNorm2d(128)
        self.c3s, self.bn3s = conv(64, 128, 1, 2, 0), nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(x + self.bn1b(self.c1b(F.relu(self.bn1a(self.c1a(x))))))
        x = F.relu(self.bn2s(self.c2s(x)) + self.bn2b(self.c2b(F.relu(self.bn2a(self.c2a(x))))))
        x = F.relu(self.bn3s(self.c3s(x)) + self.bn3b(self.c3b(F.relu(self.bn3a(self.c3a(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def evaluate(net, loader):
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    net.train()
    return 100.0 * correct / total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)

    train_set = Augmented(CifarBinary(args.data, True), train=True)
    test_set = Augmented(CifarBinary(args.data, False), train=False)
    train = DataLoader(train_set, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                       worker_init_fn=lambda w: np.random.seed(args.seed * 100 + w))
    test = DataLoader(test_set, batch_size=500, shuffle=False, num_workers=args.workers)
    net = ResNet()
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(train),
                                                   cycle_momentum=False)

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        running, batches = 0.0, 0
        for x, y in train:
            optimizer.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
            batches += 1
        acc = evaluate(net, test)
        print(f"epoch {epoch:2d}: train loss {running / batches:.3f}, test accuracy {acc:.2f} % "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"Finished Training in {time.perf_counter() - start:.1f} s (including evaluation after each epoch)")
    print(f"Accuracy of the network on the 10000 test images: {evaluate(net, test):.2f} %")


if __name__ == "__main__":
    main()

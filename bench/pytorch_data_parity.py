#!/usr/bin/env python3
"""Data beyond CIFAR-10, trained side by side in kiln and PyTorch: the same
net, data, settings and seeds, the test accuracies compared.

Three cases (the data is written under --work first):

  grey     a folder of grey 32x32 PNGs (`<split>/<class>/*.png`, taken from
           CIFAR-10 and converted as torchvision's Grayscale does), trained
           with `kiln train bench/parity/grey_cnn.net` (a 1-channel CNN);
  tabular  an `(N, 30)` float32 `.npy` table with `(N,)` int64 labels (a
           noisy 4-class problem a random teacher network labels), trained
           with `kiln train bench/parity/tabular_mlp.net`;
  float16  the lecture's LeNet trained in PyTorch on CIFAR-10, its
           state_dict saved in float16 safetensors, evaluated by
           `kiln eval examples/lenet.net` and by PyTorch.

    python3 bench/pytorch_data_parity.py --cifar DIR --kiln target/release/kiln \\
        [--work /tmp/kiln-parity] [--seeds 0,1,2] [--cases grey,tabular,float16]

DIR holds the official CIFAR-10 binary batches
(`python3 ../shared/data/cifar10_to_bin.py DIR`). Needs numpy, torch,
pillow and safetensors.
"""
import argparse
import os
import re
import subprocess
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from pytorch_cifar10 import CifarBinary
from pytorch_lenet import Net as LeNet

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

GREY = dict(train=10000, test=2000, batch=32, lr=0.01, momentum=0.9, epochs=4)
TABULAR = dict(train=6000, test=2000, features=30, classes=4, batch=32, lr=0.01, momentum=0.9, epochs=10)
FLOAT16 = dict(batch=32, lr=0.01, momentum=0.9, epochs=2)


class GreyCnn(nn.Module):
    """bench/parity/grey_cnn.net"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class TabularMlp(nn.Module):
    """bench/parity/tabular_mlp.net"""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(30, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 4)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def write_grey_folder(cifar, out):
    """The first GREY['train'] / GREY['test'] CIFAR-10 images as grey PNGs."""
    if os.path.isdir(os.path.join(out, "test")):
        return
    for split, train, count in (("train", True, GREY["train"]), ("test", False, GREY["test"])):
        data = CifarBinary(cifar, train)
        for i in range(count):
            # Class folders sort as the labels do, so both readers number them alike.
            folder = os.path.join(out, split, f"{int(data.labels[i])}")
            os.makedirs(folder, exist_ok=True)
            rgb = Image.fromarray(data.images[i].transpose(1, 2, 0))
            rgb.convert("L").save(os.path.join(folder, f"{i:05d}.png"))


def read_grey_folder(root, split):
    """Images and labels of a grey folder, read back from the PNGs."""
    xs, ys = [], []
    for label in sorted(os.listdir(os.path.join(root, split))):
        folder = os.path.join(root, split, label)
        for name in sorted(os.listdir(folder)):
            xs.append(np.asarray(Image.open(os.path.join(folder, name)).convert("L"), dtype=np.float32))
            ys.append(int(label))
    # ToTensor, then Normalize(0.5, 0.5): kiln's default normalisation.
    x = (torch.from_numpy(np.stack(xs)).unsqueeze(1) / 255.0 - 0.5) / 0.5
    return x, torch.tensor(ys)


def write_table(out):
    """A noisy 4-class problem: labels from a random tanh teacher, 10 % flipped."""
    if os.path.isfile(os.path.join(out, "test_y.npy")):
        return
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(12345)
    n = TABULAR["train"] + TABULAR["test"]
    x = rng.standard_normal((n, TABULAR["features"])).astype(np.float32)
    w1 = rng.standard_normal((TABULAR["features"], 16)) / np.sqrt(TABULAR["features"])
    w2 = rng.standard_normal((16, TABULAR["classes"]))
    y = np.argmax(np.tanh(x @ w1 * 2.0) @ w2, axis=1)
    flip = rng.random(n) < 0.1
    y[flip] = rng.integers(0, TABULAR["classes"], flip.sum())
    y = y.astype(np.int64)
    t = TABULAR["train"]
    np.save(os.path.join(out, "train_x.npy"), x[:t])
    np.save(os.path.join(out, "train_y.npy"), y[:t])
    np.save(os.path.join(out, "test_x.npy"), x[t:])
    np.save(os.path.join(out, "test_y.npy"), y[t:])


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(y), 500))
    return 100.0 * correct / len(y)


def torch_fit(net, x, y, tx, ty, cfg, seed):
    """SGD with momentum on shuffled batches (the last one partial, as kiln's
    loader); the test accuracy after every epoch."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    accs = []
    for _ in range(cfg["epochs"]):
        net.train()
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), cfg["batch"]):
            idx = order[i:i + cfg["batch"]]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        accs.append(accuracy(net, tx, ty))
    return accs


def kiln_train(kiln, model, data, cfg, seed, threads):
    cmd = [kiln, "train", model, "--data", data, "--batch", str(cfg["batch"]), "--epochs", str(cfg["epochs"]),
           "--lr", str(cfg["lr"]), "--momentum", str(cfg["momentum"]), "--seed", str(seed),
           "--threads", str(threads), "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    accs = [float(a) for a in re.findall(r"^epoch \d+/\d+: .*test accuracy ([\d.]+) %", out.stderr + out.stdout, re.M)]
    if len(accs) != cfg["epochs"]:
        raise RuntimeError(f"unexpected kiln output:\n{out.stdout}\n{out.stderr}")
    return accs, " ".join(cmd)


def compare(name, kiln_runs, torch_runs):
    k = np.array([r[-1] for r in kiln_runs])
    t = np.array([r[-1] for r in torch_runs])
    print(f"\n## {name}: final test accuracy (%) per seed")
    print(f"kiln    {' '.join(f'{a:6.2f}' for a in k)}   mean {k.mean():.2f}")
    print(f"PyTorch {' '.join(f'{a:6.2f}' for a in t)}   mean {t.mean():.2f}")
    print(f"difference of the means (kiln - PyTorch): {k.mean() - t.mean():+.2f} points")
    for s, (kr, tr) in enumerate(zip(kiln_runs, torch_runs)):
        print(f"  seed {s}: per epoch kiln {kr}  PyTorch {[round(a, 2) for a in tr]}")


def grey(args, seeds):
    data = os.path.join(args.work, "grey")
    write_grey_folder(args.cifar, data)
    x, y = read_grey_folder(data, "train")
    tx, ty = read_grey_folder(data, "test")
    model = os.path.join(HERE, "parity", "grey_cnn.net")
    kiln_runs, torch_runs = [], []
    for seed in seeds:
        accs, cmd = kiln_train(args.kiln, model, data, GREY, seed, args.threads)
        kiln_runs.append(accs)
        torch.manual_seed(seed)
        torch_runs.append(torch_fit(GreyCnn(), x, y, tx, ty, GREY, seed))
    print(f"\nkiln: {cmd}")
    compare(f"grey image folder ({GREY['train']} train, {GREY['test']} test images)", kiln_runs, torch_runs)


def tabular(args, seeds):
    data = os.path.join(args.work, "tabular")
    write_table(data)
    load = lambda n: torch.from_numpy(np.load(os.path.join(data, n)))
    x, y, tx, ty = load("train_x.npy"), load("train_y.npy"), load("test_x.npy"), load("test_y.npy")
    model = os.path.join(HERE, "parity", "tabular_mlp.net")
    kiln_runs, torch_runs = [], []
    for seed in seeds:
        accs, cmd = kiln_train(args.kiln, model, data, TABULAR, seed, args.threads)
        kiln_runs.append(accs)
        torch.manual_seed(seed)
        torch_runs.append(torch_fit(TabularMlp(), x, y, tx, ty, TABULAR, seed))
    print(f"\nkiln: {cmd}")
    compare(f"(N, 30) .npy table ({TABULAR['train']} train, {TABULAR['test']} test rows)", kiln_runs, torch_runs)


def float16(args):
    from safetensors.torch import save_file

    train, test = CifarBinary(args.cifar, True), CifarBinary(args.cifar, False)
    to_x = lambda d: (torch.from_numpy(d.images.astype(np.float32)) / 255.0 - 0.5) / 0.5
    x, y, tx, ty = to_x(train), torch.from_numpy(train.labels), to_x(test), torch.from_numpy(test.labels)
    torch.manual_seed(0)
    net = LeNet()
    torch_fit(net, x, y, tx, ty, FLOAT16, 0)
    half = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    path = os.path.join(args.work, "lenet_f16.safetensors")
    save_file(half, path)
    net.load_state_dict({k: v.float() for k, v in half.items()})
    want = accuracy(net, tx, ty)
    cmd = [args.kiln, "eval", os.path.join(ROOT, "examples", "lenet.net"), "--weights", path, "--data", args.cifar,
           "--threads", str(args.threads), "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    got = re.search(r"Accuracy of the network on the (\d+) test images: ([\d.]+) %", out.stdout)
    converted = re.search(r"converted .*", out.stderr)
    print(f"\nkiln: {' '.join(cmd)}")
    print(f"\n## float16 state_dict (LeNet, {FLOAT16['epochs']} epochs in PyTorch), CIFAR-10 test accuracy (%)")
    print(f"kiln eval says: {converted.group(0) if converted else '(no conversion reported)'}")
    print(f"kiln {float(got.group(2)):.2f} on {got.group(1)} images; PyTorch (float16 weights as float32) {want:.2f}")
    # kiln prints one decimal: agreement is to that precision.
    print(f"difference: {float(got.group(2)) - want:+.2f} points (kiln prints one decimal)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", required=True)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    ap.add_argument("--work", default="/tmp/kiln-parity")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cases", default="grey,tabular,float16")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = args.cases.split(",")
    start = time.perf_counter()
    if "grey" in cases:
        grey(args, seeds)
    if "tabular" in cases:
        tabular(args, seeds)
    if "float16" in cases:
        float16(args)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

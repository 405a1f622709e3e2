#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures that `cli/tests/cli_parity.rs` checks
`kiln grad` against: one directory per case, each holding

    model.net        the network in kiln's language
    flags            the `kiln grad` flags of the case (loss, optimizer)
    params/<key>.npy the initial state_dict (PyTorch's initialisation, seeded)
    input.npy        the batch, float32
    labels.npy       class indices, int64
    expected/        what PyTorch computes, under the names `kiln grad` writes:
                     output.npy, loss.npy, grad_input.npy, grad_<key>.npy,
                     losses.npy (the loss at each step) and after_<key>.npy
                     (the state_dict after the steps)

Run from the repository root with PyTorch installed:
    python3 cli/tests/parity/make.py
Every case is float32 on the CPU and seeded, so the files are reproducible.
"""

import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 3


class Activations(nn.Module):
    """GELU (both forms) and SiLU, as layers and as functions, after
    convolutions and linear layers."""

    NET = """struct Activations {
    conv1: Conv2d(3, 8, 3, padding = 1),
    act1: GELU(),
    conv2: Conv2d(8, 8, 3, stride = 2),
    act2: SiLU(),
    fc1: Linear(8 * 3 * 3, 16),
    fc2: Linear(16, 10),
}

fn forward(x: [N, 3, 8, 8]) -> [N, 10] {
    let h = act2(conv2(act1(conv1(x))));
    let h = gelu(fc1(h.flatten(1)), approximate = "tanh");
    fc2(silu(h))
}
"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.act2 = nn.SiLU()
        self.fc1 = nn.Linear(8 * 3 * 3, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        h = F.gelu(self.fc1(h.flatten(1)), approximate="tanh")
        return self.fc2(F.silu(h))


class Residual(nn.Module):
    """A residual block, softmax over channels as an attention map, the
    global average pool and log-softmax logits."""

    NET = """struct Residual {
    stem: Conv2d(3, 8, 3, padding = 1),
    c1: Conv2d(8, 8, 3, padding = 1),
    c2: Conv2d(8, 8, 3, padding = 1),
    gap: AdaptiveAvgPool2d(1),
    fc: Linear(8, 10),
}

fn forward(x: [N, 3, 8, 8]) -> [N, 10] {
    let h = relu(stem(x));
    let h = h * softmax(h, 1);
    let r = relu(c2(relu(c1(h))) + h);
    let p = adaptive_avg_pool2d(r, (2, 4));
    let z = fc(gap(p).flatten(1));
    log_softmax(z, dim = -1)
}
"""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = h * F.softmax(h, 1)
        r = F.relu(self.c2(F.relu(self.c1(h))) + h)
        p = F.adaptive_avg_pool2d(r, (2, 4))
        z = self.fc(self.gap(p).flatten(1))
        return F.log_softmax(z, dim=-1)


class Norm(nn.Module):
    """BatchNorm2d (affine, and not with its own eps and momentum) after
    convolutions with and without bias, across a residual sum, and
    BatchNorm1d after a linear layer."""

    NET = """struct Norm {
    conv1: Conv2d(3, 8, 3, padding = 1, bias = false),
    bn1: BatchNorm2d(8),
    conv2: Conv2d(8, 8, 3, padding = 1),
    bn2: BatchNorm2d(8, eps = 1e-3, momentum = 0.3, affine = false),
    pool: AvgPool2d(2),
    fc1: Linear(8 * 4 * 4, 16),
    bn3: BatchNorm1d(16),
    fc2: Linear(16, 10),
}

fn forward(x: [N, 3, 8, 8]) -> [N, 10] {
    let h = relu(bn1(conv1(x)));
    let h = pool(relu(bn2(conv2(h)) + h));
    let h = relu(bn3(fc1(h.flatten(1))));
    fc2(h)
}
"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8, eps=1e-3, momentum=0.3, affine=False)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.bn3 = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 10)
        # Away from the initial 1, 0, 0, 1, so that a swapped or ignored
        # weight, bias or running statistic shows.
        g = torch.Generator().manual_seed(1)
        for bn in (self.bn1, self.bn2, self.bn3):
            c = bn.num_features
            if bn.affine:
                bn.weight.data = torch.rand(c, generator=g) + 0.5
                bn.bias.data = torch.rand(c, generator=g) - 0.5
            bn.running_mean.data = torch.rand(c, generator=g) - 0.5
            bn.running_var.data = torch.rand(c, generator=g) + 0.5

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.pool(F.relu(self.bn2(self.conv2(h)) + h))
        h = F.relu(self.bn3(self.fc1(h.flatten(1))))
        return self.fc2(h)


class NormNoBias(Norm):
    """`Norm` without the biases before its normalisations: their gradient
    is zero in exact arithmetic, rounding noise in float32, and Adam's
    normalised step turns that noise into steps of the full learning rate,
    in a direction neither framework can reproduce."""

    NET = Norm.NET.replace("Conv2d(8, 8, 3, padding = 1)", "Conv2d(8, 8, 3, padding = 1, bias = false)").replace(
        "Linear(8 * 4 * 4, 16)", "Linear(8 * 4 * 4, 16, bias = false)")

    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc1 = nn.Linear(8 * 4 * 4, 16, bias=False)


# (directory, module, input shape, classes, SGD settings, evaluation mode,
# label smoothing)
CASES = [
    ("gelu_silu_sgd_nesterov_wd", Activations, (6, 3, 8, 8), 10,
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3)),
    ("residual_softmax_adaptive_pool_sgd_clip", Residual, (5, 3, 8, 8), 10,
     dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, clip=0.05)),
    ("batchnorm_train_sgd_label_smoothing", Norm, (6, 3, 8, 8), 10,
     dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-3), False, 0.1),
    ("batchnorm_eval_sgd", Norm, (6, 3, 8, 8), 10,
     dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), True),
    ("gelu_silu_adam_l2", Activations, (6, 3, 8, 8), 10,
     dict(optimizer="adam", lr=0.01, weight_decay=1e-2)),
    ("batchnorm_adamw", NormNoBias, (6, 3, 8, 8), 10,
     dict(optimizer="adamw", lr=0.01, weight_decay=0.05), False, 0.1),
]

# PyTorch counts steps in `num_batches_tracked`, which only matters with
# `momentum=None`; kiln does not keep it (and `load_state_dict` fills it in).
SKIPPED = "num_batches_tracked"


def save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.array(array, order="C"))


def make(name, module, shape, classes, sgd, evaluation=False, smoothing=0.0):
    out = os.path.join(HERE, name)
    torch.manual_seed(0)
    net = module()
    if evaluation:
        net.eval()
    x = torch.randn(*shape)
    labels = torch.randint(0, classes, (shape[0],))
    shutil.rmtree(out, ignore_errors=True)  # no files left from an earlier version of the case
    os.makedirs(out)
    with open(os.path.join(out, "model.net"), "w") as f:
        f.write(module.NET)
    kind = sgd.get("optimizer", "sgd")
    flags = ["--loss", "cross-entropy", "--steps", str(STEPS), "--lr", repr(sgd["lr"]),
             "--weight-decay", repr(sgd["weight_decay"])]
    if kind == "sgd":
        flags += ["--momentum", repr(sgd["momentum"])]
        if sgd["nesterov"]:
            flags.append("--nesterov")
    else:
        flags += ["--optimizer", kind]
    if evaluation:
        flags.append("--eval")
    clip = sgd.get("clip")
    if clip:
        flags += ["--clip-grad-norm", repr(clip)]
    if smoothing:
        flags += ["--label-smoothing", repr(smoothing)]
    with open(os.path.join(out, "flags"), "w") as f:
        f.write(" ".join(flags) + "\n")
    for key, value in net.state_dict().items():
        if not key.endswith(SKIPPED):
            save(os.path.join(out, "params", key + ".npy"), value.numpy())
    save(os.path.join(out, "input.npy"), x.numpy())
    save(os.path.join(out, "labels.npy"), labels.numpy().astype(np.int64))

    expected = os.path.join(out, "expected")
    # `kiln grad` reports the first of its steps: in training mode that
    # forward pass updates the running statistics once, not twice.
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    loss.backward()
    save(os.path.join(expected, "output.npy"), logits.detach().numpy())
    save(os.path.join(expected, "loss.npy"), loss.detach().numpy())
    save(os.path.join(expected, "grad_input.npy"), xg.grad.numpy())
    for key, p in net.named_parameters():
        save(os.path.join(expected, "grad_" + key + ".npy"), p.grad.numpy())

    net.zero_grad()
    net.load_state_dict(initial)
    settings = {k: v for k, v in sgd.items() if k not in ("optimizer", "clip")}
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind](
        net.parameters(), **settings)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), labels, label_smoothing=smoothing)
        losses.append(loss.item())
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
    save(os.path.join(expected, "losses.npy"), np.array(losses, dtype=np.float32))
    for key, value in net.state_dict().items():
        if not key.endswith(SKIPPED):
            save(os.path.join(expected, "after_" + key + ".npy"), value.numpy())
    print(f"{name}: loss {losses[0]:.6f} -> {losses[-1]:.6f} after {STEPS} steps")


if __name__ == "__main__":
    torch.set_num_threads(1)
    wanted = sys.argv[1:]
    for case in CASES:
        if not wanted or case[0] in wanted:
            make(*case)

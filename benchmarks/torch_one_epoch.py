"""PyTorch twin of ThreeLayerConvNet in the cs231n one-epoch setting: the reference
figure for funkcije's one-epoch accuracy (README, Results).

    FUNKCIJE_DATA=../shared/datasets python benchmarks/torch_one_epoch.py --seed 0


conv 32x7x7 pad 3 - relu - maxpool 2x2 - affine 500 - relu - affine 10 - softmax CE;
W ~ N(0, 1e-3^2), b = 0; loss += 0.5*reg*sum(W^2) over W1,W2,W3; Adam lr 1e-3 (torch defaults
otherwise); batch 50; 980 iterations over np.random.default_rng(seed).permutation(49000).
Data: funkcije.data_utils.get_CIFAR10_data() (train/val identical to the default call; num_test=10000)."""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, required=True)
p.add_argument("--iters", type=int, default=980)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--json", help="also write the result to this file")
a = p.parse_args()
torch.set_num_threads(a.threads)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from funkcije.data_utils import get_CIFAR10_data  # noqa: E402

t0 = time.time()
data = get_CIFAR10_data(num_test=10000)
Xtr = torch.from_numpy(data["X_train"]); ytr = torch.from_numpy(data["y_train"])
Xva = torch.from_numpy(data["X_val"]); yva = torch.from_numpy(data["y_val"])
Xte = torch.from_numpy(data["X_test"]); yte = torch.from_numpy(data["y_test"])
assert Xtr.dtype == torch.float32 and Xtr.shape == (49000, 3, 32, 32) and Xva.shape == (1000, 3, 32, 32)

torch.manual_seed(a.seed)
ws, reg, H = 1e-3, 1e-3, 500
W1 = (ws * torch.randn(32, 3, 7, 7)).requires_grad_(); b1 = torch.zeros(32, requires_grad=True)
W2 = (ws * torch.randn(32 * 16 * 16, H)).requires_grad_(); b2 = torch.zeros(H, requires_grad=True)
W3 = (ws * torch.randn(H, 10)).requires_grad_(); b3 = torch.zeros(10, requires_grad=True)
params = [W1, b1, W2, b2, W3, b3]
opt = torch.optim.Adam(params, lr=1e-3)

def scores(x):
    h = F.max_pool2d(F.relu(F.conv2d(x, W1, b1, stride=1, padding=3)), 2, 2)
    h = F.relu(h.reshape(x.shape[0], -1) @ W2 + b2)
    return h @ W3 + b3

def acc(X, y, bs=500):
    with torch.no_grad():
        pred = torch.cat([scores(X[i:i + bs]).argmax(1) for i in range(0, X.shape[0], bs)])
    return (pred == y).double().mean().item()

perm = torch.from_numpy(np.random.default_rng(a.seed).permutation(49000))
t1 = time.time()
losses = []
for it in range(a.iters):
    idx = perm[it * 50:(it + 1) * 50]
    s = scores(Xtr[idx])
    loss = F.cross_entropy(s, ytr[idx]) + 0.5 * reg * (W1.pow(2).sum() + W2.pow(2).sum() + W3.pow(2).sum())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if it % 100 == 0 or it == a.iters - 1:
        print(f"iter {it} loss {losses[-1]:.4f}", flush=True)
t2 = time.time()
va = acc(Xva, yva); te = acc(Xte, yte)
tr1k = acc(Xtr[:1000], ytr[:1000])
t3 = time.time()
res = dict(seed=a.seed, iters=a.iters, val=va, test=te, train_first1000=tr1k, final_loss=losses[-1],
           train_s=t2 - t1, total_s=t3 - t0, torch=torch.__version__, threads=torch.get_num_threads())
print(json.dumps(res), flush=True)
if a.json:
    with open(a.json, "w") as f:
        json.dump(res, f)

"""PyTorch twin of the train CLI's FER-lab recipes (`fer-mnist`, `fer-cifar`): the yardstick
for what those settings reach (README, recipes table).

    FUNKCIJE_DATA=/abs/path/datasets python benchmarks/torch_fer.py --recipe fer-mnist --seed 0

The same network with the same initial weights (the zoo model built as the CLI builds it, then
funkcije.torch_twin.to_torch), the same data and normalisation (funkcije's loaders), the same
settings read from funkcije.train.RECIPES: SGD (with momentum 0.9 for `sgd_momentum`), the
per-epoch step or exponential learning rate, L2 as 0.5 * reg * sum(W^2) over the convolution
and affine weights, minibatches cut from a seeded permutation each epoch. Validation accuracy
after every epoch; the test accuracy is that of the best validation epoch's weights, as the
Solver reports it. The minibatch order differs from the Solver's (a different generator), so
the runs agree in distribution, not step by step.
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from funkcije import augment  # noqa: E402
from funkcije.schedules import scheduled_learning_rate  # noqa: E402
from funkcije.torch_twin import to_torch  # noqa: E402
from funkcije.train import DATASETS, RECIPES, build_model  # noqa: E402

TWINNED = ("fer-mnist", "fer-cifar")

p = argparse.ArgumentParser()
p.add_argument("--recipe", choices=TWINNED, required=True)
p.add_argument("--seed", type=int, required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--json", help="also write the result to this file")
a = p.parse_args()
torch.set_num_threads(a.threads)

r = RECIPES[a.recipe]
cfg = dict(r, dtype="float32", seed=a.seed, weight_scale=None)
if r["update_rule"] not in ("sgd", "sgd_momentum") or r["lr_schedule"] not in ("step", "exponential"):
    sys.exit(f"torch_fer: {a.recipe} uses settings this twin does not reproduce")
momentum = r.get("momentum", 0.9) if r["update_rule"] == "sgd_momentum" else 0.0
schedule = ({"type": "step", "step_size": r["lr_step"], "gamma": r["lr_gamma"]} if r["lr_schedule"] == "step"
            else {"type": "exponential", "gamma": r["lr_gamma"]})  # the Solver's own formulas below

t0 = time.time()
loader, _, num_train = DATASETS[r["dataset"]]
data = loader(num_training=num_train, num_validation=1000, num_test=10000, dtype=np.float32)
if r.get("normalize") == "channel":
    norm = augment.Normalize.fit(data["X_train"])
    for split in ("X_train", "X_val", "X_test"):
        data[split] = norm(data[split])
X = {k: torch.from_numpy(np.ascontiguousarray(data["X_" + k])) for k in ("train", "val", "test")}
y = {k: torch.from_numpy(data["y_" + k]) for k in ("train", "val", "test")}

model = build_model(cfg, data["X_train"].shape[1:], 10)
net = to_torch(model)
decayed = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
opt = torch.optim.SGD(net.parameters(), lr=r["lr"], momentum=momentum)


def accuracy(split, bs=1000):
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(X[split][i:i + bs]).argmax(1) for i in range(0, X[split].shape[0], bs)])
    net.train()
    return (pred == y[split]).double().mean().item()


rng = np.random.default_rng(a.seed)
bs = r["batch_size"]
best = (-1.0, 0, None)
history = []
t1 = time.time()
for epoch in range(r["epochs"]):
    lr = scheduled_learning_rate(r["lr"], epoch, schedule)
    for group in opt.param_groups:
        group["lr"] = lr
    perm = torch.from_numpy(rng.permutation(num_train))
    for it in range(num_train // bs):
        idx = perm[it * bs:(it + 1) * bs]
        loss = F.cross_entropy(net(X["train"][idx]), y["train"][idx])
        loss = loss + 0.5 * r["reg"] * sum(w.pow(2).sum() for w in decayed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    val = accuracy("val")
    history.append(dict(epoch=epoch + 1, lr=lr, loss=loss.item(), val=val))
    print(f"epoch {epoch + 1} lr {lr:.2e} last loss {loss.item():.4f} val {val:.4f}", flush=True)
    if val > best[0]:
        best = (val, epoch + 1, copy.deepcopy(net.state_dict()))
t2 = time.time()
net.load_state_dict(best[2])
res = dict(recipe=a.recipe, seed=a.seed, best_val=best[0], best_epoch=best[1], test=accuracy("test"),
           train_s=t2 - t1, total_s=time.time() - t0, torch=torch.__version__, threads=torch.get_num_threads(),
           history=history)
print(json.dumps({k: v for k, v in res.items() if k != "history"}), flush=True)
if a.json:
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)

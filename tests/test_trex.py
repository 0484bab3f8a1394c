"""t-ReX as naver/trex runs it (issue 23): the OCM rules checked by hand, the EMA model in train mode averaging parameters only,
the projector's initialisation, and torchvision's ResNet50 (and naver/trex checkpoints) in cogsynth's encoder."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cogsynth.models import OCMHead, OCMUpdate, TrexProjector, build_classifier, create_encoder
from cogsynth.train import build_model, get_recipe, train_one_epoch

torch.set_num_threads(1)

# ---------------------------------------------------------------- the reference's rules, written out by hand (naver/trex trex.py)

def hand_prototypes(rows, labels, n_classes):
    "Memory.class_weights: the per-class sums of the stored rows, each then divided by its L2 norm."
    sums = [[0.0] * rows.shape[1] for _ in range(n_classes)]
    for row, c in zip(rows.tolist(), labels.tolist()):
        sums[c] = [a + b for a, b in zip(sums[c], row)]
    norms = [max(sum(v * v for v in s) ** 0.5, 1e-12) for s in sums]
    return torch.tensor([[v / n for v in s] for s, n in zip(sums, norms)])

def hand_loss(z, y, rows, labels, n_classes, tau):
    "Cross-entropy of cosine logits l2(z) @ prototypes.T / tau, computed from the definition."
    protos, total = hand_prototypes(rows, labels, n_classes), 0.0
    for zi, yi in zip(z.tolist(), y.tolist()):
        n = sum(v * v for v in zi) ** 0.5
        logits = [sum(a * b for a, b in zip(zi, p)) / n / tau for p in protos.tolist()]
        m = max(logits)
        total += -(logits[yi] - m - torch.tensor([l - m for l in logits]).exp().sum().log().item())
    return total / len(y)

def hand_update(rows, labels, ptr, feats, y):
    "Memory.update: write at ptr; a batch that does not fit keeps only its first rows, and ptr wraps to 0."
    size = len(rows)
    if ptr + len(feats) > size: feats, y = feats[:size - ptr], y[:size - ptr]
    rows[ptr:ptr + len(feats)] = feats
    labels[ptr:ptr + len(feats)] = y
    return (ptr + len(feats)) % size

# ---------------------------------------------------------------- OCM head

def test_initial_memory_is_random_rows_with_random_labels():
    torch.manual_seed(0)
    head = OCMHead(16, num_classes=5, memory_size=4096)
    assert head.memory.mean().abs() < 0.05 and (head.memory.std() - 1).abs() < 0.05        # randn, not zeros
    assert head.memory_labels.min() == 0 and head.memory_labels.max() == 4                  # randint(0, n_classes): no -1 rows
    assert int(head.ptr) == 0

def test_ocm_losses_and_memory_match_the_reference_rules_step_by_step():
    "The same embeddings and labels through OCMHead for 5 steps: logits before the enqueue, raw rows, per-class sums, drop on overflow."
    torch.manual_seed(0)
    n_classes, size, tau = 4, 10, 0.1
    head = OCMHead(3, num_classes=n_classes, memory_size=size, temperature=tau)
    rows, labels, ptr = head.memory.clone(), head.memory_labels.clone(), 0
    ptrs, batches = [], []
    for step in range(5):
        z, e = torch.randn(4, 3) * 5, torch.randn(4, 3) * 9        # the model's and the EMA model's raw projector outputs
        y = torch.randint(0, n_classes, (4,))
        loss = F.cross_entropy(head(z), y).item()                 # scored against the memory as it was before this batch
        assert loss == pytest.approx(hand_loss(z, y, rows, labels, n_classes, tau), rel=1e-5, abs=1e-5), step
        head.enqueue(e, y)
        ptr = hand_update(rows, labels, ptr, e, y)
        assert torch.equal(head.memory, rows) and torch.equal(head.memory_labels, labels) and int(head.ptr) == ptr, step
        ptrs.append(ptr); batches.append(e)
    assert ptrs == [4, 8, 0, 4, 8]                                  # step 3: 2 of 4 rows fit, the other 2 are dropped
    assert torch.equal(head.memory[8:10], batches[2][:2]) and torch.equal(head.memory[0:4], batches[3])
    assert not torch.allclose(head.memory.norm(dim=1), torch.ones(size))   # raw rows (norms ~9 here), not unit vectors

# ---------------------------------------------------------------- the EMA model and the whole forward, against trex.py's order

class TinyEncoder(nn.Module):
    "A linear layer, batch norm and ReLU: enough for batch statistics to matter."
    def __init__(self):
        super().__init__(); self.lin, self.bn, self.num_features = nn.Linear(6, 8), nn.BatchNorm1d(8), 8
    def forward(self, x): return F.relu(self.bn(self.lin(x)))

def test_three_steps_match_trex_forward_order_with_ema_in_train_mode():
    "tReX.forward: logits, then update_model_ema (parameters only), then model_ema(image) in train mode, then Memory.update; then SGD."
    torch.manual_seed(1)
    m, tau, classes, size = 0.5, 0.1, 3, 12
    net = build_classifier(TinyEncoder(), classes, "ocm", projector_layers=1, projector_hidden=16, projector_out=4, memory_size=size, temperature=tau)
    model = nn.Sequential(copy.deepcopy(net.encoder), copy.deepcopy(net.projector))   # the reference's model ...
    model_ema = copy.deepcopy(model).requires_grad_(False)                            # ... and its EMA copy
    rows, labels, ptr = net.head.memory.clone(), net.head.memory_labels.clone(), 0
    batches = [(torch.randn(5, 6), torch.randint(0, classes, (5,))) for _ in range(3)]
    opt_ref = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    ref_losses = []
    for x, y in batches:
        model.train(); model_ema.train()
        out = model(x)
        logits = F.normalize(out, dim=1) @ hand_prototypes(rows, labels, classes).T / tau
        with torch.no_grad():
            for pe, pm in zip(model_ema.parameters(), model.parameters()): pe.data = pe.data * m + pm.data * (1.0 - m)
            ptr = hand_update(rows, labels, ptr, model_ema(x), y)
        loss = F.cross_entropy(logits, y)
        opt_ref.zero_grad(); loss.backward(); opt_ref.step()
        ref_losses.append(loss.item())

    hook, losses = OCMUpdate(net, m), []
    def loss_fn(z, t):
        loss = F.cross_entropy(z.float(), t); losses.append(loss.item()); return loss
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    net.train()
    train_one_epoch(net, batches, opt, device=torch.device("cpu"), prepare=lambda x: x, hooks=[hook], loss_fn=loss_fn, show=False)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert torch.allclose(net.head.memory, rows, atol=1e-5) and torch.equal(net.head.memory_labels, labels) and int(net.head.ptr) == ptr == 0   # 0 -> 5 -> 10 -> 2 of 5 fit -> 0
    ours, ref = hook.ema.module.state_dict(), model_ema.state_dict()
    assert all(torch.allclose(ours[k].float(), ref[k].float(), atol=1e-5) for k in ref), "EMA parameters and its own BN statistics"

def test_the_trex_recipe_builds_this_hook_and_checkpoints_the_ema():
    r = get_recipe("trex", projector_hidden=16, projector_out=8, memory_size=32, ema_momentum=0.9)
    m = build_model("cnn_small", 3, r, device=torch.device("cpu"))
    assert isinstance(m.hook, OCMUpdate) and m.hook.ema.momentum == 0.9
    sd = m.hook.state_dict()
    assert set(sd) == {f"module.{k}" for k in m.hook.source.state_dict()}   # the layout timm's ModelEmaV3 wrote: old checkpoints load

# ---------------------------------------------------------------- initialisation and encoders

def test_projector_initialisation_is_trex_init_weights():
    torch.manual_seed(0)
    p = TrexProjector(512, hidden_dim=1024, out_dim=256, n_layers=3)
    lin = [l for l in p.modules() if isinstance(l, nn.Linear)]
    assert all(l.bias is None or float(l.bias.detach().abs().max()) == 0.0 for l in lin)
    for l in lin:   # PyTorch's default is uniform with std 1/sqrt(3 fan_in): 0.0255 for fan_in 512, 0.018 for 1024
        assert l.weight.std().item() == pytest.approx(0.02, rel=0.03) and l.weight.mean().abs() < 1e-3

def test_torchvision_resnet50_state_dict_gives_the_same_features(tmp_path):
    "timm's resnet50 is torchvision's: a torchvision state dict (random init, no download) loads into cogsynth's encoder."
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    torch.save(tv.state_dict(), tmp_path/"tv.pth")
    ours = create_encoder("resnet50", weights=tmp_path/"tv.pth").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = nn.Sequential(*list(tv.children())[:-1])(x).flatten(1)
        assert torch.allclose(ours(x), expected, atol=1e-4)
        # naver/trex's ResNet50 files (trex.pth: torchvision's state dict without fc) and its full checkpoints (DDP, module.model.encoder.*)
        torch.save({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}, tmp_path/"trex.pth")
        assert torch.allclose(create_encoder("resnet50", weights=tmp_path/"trex.pth").eval()(x), expected, atol=1e-4)
        import argparse
        full = {"model": {f"module.model.encoder.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")},
                "epoch": 100, "args": argparse.Namespace(arch="resnet50", lr=0.1)}
        torch.save(full, tmp_path/"trex_full.pth")
        assert torch.allclose(create_encoder("resnet50", weights=tmp_path/"trex_full.pth").eval()(x), expected, atol=1e-4)

def test_thesis_recipes_initialise_resnet50_as_torchvision_does():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet50()
    for recipe in ("thesis-sd", "trex-star"):
        enc = build_model("resnet50", 3, get_recipe(recipe, projector_hidden=16, projector_out=8, memory_size=8), device=torch.device("cpu")).net.encoder
        assert {k: v.shape for k, v in enc.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
        last_gammas = torch.cat([b.bn3.weight for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4) for b in layer])
        assert bool((last_gammas == 1).all()), recipe           # torchvision: gamma 1; timm's default zero_init_last: 0
        conv = enc.layer2[0].conv2.weight                        # Kaiming normal, fan_out, relu: std sqrt(2 / (128 * 9))
        assert conv.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.05)
    enc = build_model("resnet50", 3, get_recipe("torch"), device=torch.device("cpu")).net.encoder
    assert float(enc.layer1[0].bn3.weight.detach().abs().max()) == 0.0   # the torch recipe keeps timm's default

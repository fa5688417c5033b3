"""Chapter 6's segmentation losses, and the pruned U-Net++ the chapter scores from one pass."""

import torch
import torch.nn.functional as F

from unet_edu.models import UNetPlusPlus
from unet_edu.pretrained import experiments

WEIGHTS = torch.tensor([0.6, 3.0])  # stands in for the decoy training set's class balance


def _batch(seed=0, n=3, size=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    y = (torch.rand(n, size, size, generator=g) < 0.2).long()
    return x, y


def test_class_balance_makes_both_classes_weigh_the_same():
    _, y = _batch()
    w = experiments.class_balance(y)
    n_cell = int(y.sum())
    n_background = y.numel() - n_cell
    assert torch.isclose(w[0] * n_background, w[1] * n_cell)
    assert torch.isclose(w[0] * n_background + w[1] * n_cell, torch.tensor(float(y.numel())))


def test_balanced_cross_entropy_weighs_each_pixel_by_its_class(monkeypatch):
    monkeypatch.setattr(experiments, "decoy_weights", lambda: WEIGHTS)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 3, padding=1)
    x, y = _batch()
    loss = experiments.balanced_cross_entropy(model, (x, y), None)
    per_pixel = F.cross_entropy(model(x), y, reduction="none")
    w = WEIGHTS[y]
    assert torch.isclose(loss, (w * per_pixel).sum() / w.sum())
    # the weights matter: the unweighted mean differs
    assert not torch.isclose(loss, per_pixel.mean())


def test_deep_supervision_averages_every_head(monkeypatch):
    monkeypatch.setattr(experiments, "decoy_weights", lambda: WEIGHTS)
    torch.manual_seed(0)
    model = UNetPlusPlus(features=(4, 8, 8))
    x, y = _batch()
    loss = experiments.deep_supervision_cross_entropy(model, (x, y), None)
    heads = [F.cross_entropy(model(x, depth=d), y, weight=WEIGHTS) for d in (1, 2)]
    assert torch.isclose(loss, sum(heads) / 2)
    assert not torch.isclose(loss, heads[-1])


def test_every_pruned_head_reads_the_full_pass_nodes():
    """Head d on node X[0, d] of the full pass is the network pruned to depth d, bit for bit:
    the nodes with i + j <= d do not depend on the deeper ones."""
    torch.manual_seed(1)
    model = UNetPlusPlus(features=(4, 8, 8, 16)).eval()
    x, _ = _batch(size=24)
    with torch.no_grad():
        nodes = model.node_outputs(x)
        for d in (1, 2, 3):
            assert torch.equal(model.heads[d - 1](nodes[f"0_{d}"]), model(x, depth=d))


def test_the_chapter_losses_train_the_decoy_experiments():
    decoys = experiments.EXPERIMENTS["decoy-segmentation"]
    assert decoys.loss_for("unet") is experiments.balanced_cross_entropy
    assert decoys.loss_for("attention-unet") is experiments.balanced_cross_entropy
    assert decoys.loss_for("unet-plus-plus") is experiments.deep_supervision_cross_entropy
    tiny = experiments.EXPERIMENTS["tiny-batches"]
    assert tiny.loss_for("batch") is experiments.balanced_cross_entropy

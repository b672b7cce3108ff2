"""k-nearest-neighbour classification on frozen features: the weighted vote (shared by the
knn_probe strategy and the knn_accuracy score) and the head and classifier knn_probe installs.
Imported inside ``fit``/``estimate`` only."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from tlbench_plugins.machinery.training import as_channels_last


def weighted_votes(query: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor, num_classes: int,
                   k: int, temperature: float, itself: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Class votes (batch, num_classes) of each query's k most cosine-similar memory rows,
    weighted exp(similarity / temperature). Both inputs L2-normalised already.

    ``itself[i]`` is the memory row that is query i, left out of its vote (leave-one-out).
    """
    similarity = query @ memory.T
    if itself is not None:
        similarity[torch.arange(len(query), device=query.device), itself] = float("-inf")
    k = min(k, memory.shape[0] - int(itself is not None))
    top, index = similarity.topk(k, dim=1)
    weights = ((top - 1.0) / temperature).exp()  # exp(s/T) / exp(1/T): the same ranking, no overflow
    votes = torch.zeros(query.shape[0], num_classes, device=query.device, dtype=weights.dtype)
    return votes.scatter_add_(1, labels[index], weights)


class KnnHead(nn.Module):
    """Votes of the stored training features; no parameters, only buffers."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int,
                 temperature: float, center: bool = False):
        super().__init__()
        features = features.float()
        mean = features.mean(0) if center else torch.zeros_like(features[0])
        self.register_buffer("mean", mean)
        self.register_buffer("memory", F.normalize(features - mean, dim=1))
        self.register_buffer("labels", labels.long())
        self.num_classes, self.k, self.temperature = num_classes, k, temperature

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        query = F.normalize(features.float() - self.mean, dim=1)
        return weighted_votes(query, self.memory, self.labels, self.num_classes, self.k, self.temperature)


class KnnClassifier(nn.Module):
    """A frozen timm network's pre-logit features, then the kNN head: for an architecture whose
    classifier slot does not take the pre-logit features (``into_classifier_slot``)."""

    def __init__(self, backbone: nn.Module, head: KnnHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(as_channels_last(x)),
                                              pre_logits=True)
        return self.head(features)


@torch.no_grad()
def into_classifier_slot(model: nn.Module, head: KnnHead, x: torch.Tensor) -> bool:
    """Put ``head`` where ``model.get_classifier()`` is, if the network then computes the head
    over its pre-logit features (checked on the images ``x``): the returned network is then the
    backbone's own class, which the core can score from the test split's cached features (the
    linear probe's too: the same body). False, and ``model`` as it was, otherwise (an
    architecture whose classifier gets other features than ``pre_logits``: KnnClassifier)."""
    slot = model.get_classifier()
    places = [name for name, m in model.named_modules(remove_duplicate=False) if m is slot]
    if len(places) != 1 or not places[0]:
        return False
    parent, _, leaf = places[0].rpartition(".")
    owner = model.get_submodule(parent)
    setattr(owner, leaf, head)
    model.eval()
    features = model.forward_features(as_channels_last(x))
    expected = head(model.forward_head(features, pre_logits=True))
    got = model.forward_head(features)
    if got.shape == expected.shape and torch.allclose(got, expected):
        if hasattr(model, "num_classes"):  # timm's, 0 since reset_classifier(0): it classifies again
            model.num_classes = head.num_classes
        return True
    setattr(owner, leaf, slot)
    return False

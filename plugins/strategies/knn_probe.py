import contextlib
from dataclasses import dataclass

import tlbench


class KnnProbe(tlbench.Strategy):
    """Frozen backbone; k-nearest-neighbour vote on cached features (cosine, DINO-style weights), no training.

    The training split's features (the linear probe's on-disk cache, so either strategy reuses
    the other's) are L2-normalised and kept in a non-trainable head. An image's k most similar
    training images vote for their class with weight exp(similarity / temperature) (Wu et al.
    2018, as in DINO's evaluation); the votes are the logits the core scores. Validation images
    are not in the memory, so a list of k (or temperature) is selected on them honestly.
    """

    name = "knn_probe"
    gpu_share = 0.25  # after its one pass over the images, it only reads cached features

    @dataclass(frozen=True)
    class Options:
        k: int = tlbench.option(20, "neighbours that vote (a list selects on validation)")
        temperature: float = tlbench.option(0.07, "vote weight exp(cosine / temperature); large = plain majority vote")
        center: bool = tlbench.option(False, "subtract the training features' mean before normalising")
        cache: bool = tlbench.option(True, "keep features on disk (under the cache dir) for later cells")

        def __post_init__(self):
            if self.k < 1:
                raise ValueError(f"k must be at least 1, got {self.k}")
            if self.temperature <= 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def fit(self, model, train, val, ctx):
        from tlbench_plugins.machinery import knn, training

        training.freeze(model)
        (train_x,) = ctx.frozen_features(model, [train], cache=self.options.cache)
        head = knn.KnnHead(train_x, train.labels.to(ctx.device), ctx.num_classes, self.options.k,
                           self.options.temperature, self.options.center)
        model.reset_classifier(0)  # after the features: the cache key counts the parameters
        with contextlib.closing(train.batches(8, device=ctx.device)) as batches:
            x, _ = next(batches)
        # in the network's own classifier slot, so that the core can score it from cached test
        # features; a wrapper where the architecture does not allow that
        classifier = model.eval() if knn.into_classifier_slot(model, head, x) else knn.KnnClassifier(model, head).eval()
        ctx.log(val_top1=training.accuracy(classifier, val, ctx), feature_dim=train_x.shape[1],
                memory=len(train_x))
        return classifier

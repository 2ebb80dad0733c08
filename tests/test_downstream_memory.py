"""The segmenter's memory knobs: gradient checkpointing, gradient accumulation, channels_last."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from anobench.benchmarks.config import load_config
from anobench.benchmarks.errors import ConfigError
from anobench.benchmarks.runner.jobs import downstream_hash
from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.segmenter import DiscriminativeUNet, focal_loss
from anobench.downstream.segmenters import Segmenter, create_segmenter
from anobench.downstream.training import SegmenterConfig, predict_tensor, train_segmenter, train_step

TINY = dict(image_size=32, base_width=4, epochs=1, samples_per_epoch=6, batch_size=3, device="cpu")
KNOBS = ("gradient_checkpointing", "grad_accum", "channels_last")


@pytest.fixture(scope="module")
def nut_inputs(nut_root):
    from anobench.benchmarks.data.mvtec import read_category
    from anobench.benchmarks.data.splits import make_split

    manifest = make_split(read_category(nut_root, "nut"), "strict")
    return [manifest.absolute(p) for p in manifest.train_good][:4], manifest.fewshot_samples()


def test_checkpointing_gives_the_same_gradients_and_updates_batchnorm_once():
    torch.manual_seed(0)
    plain = DiscriminativeUNet(base_width=4)
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing = True
    images, masks = torch.rand(3, 3, 64, 64), (torch.rand(3, 64, 64) > 0.9).float()
    for net in (plain, checkpointed):
        focal_loss(net(images), masks).backward()
    for p, q in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad)
    # the recomputation in the backward pass must not move the running statistics a second time
    for (name, p), q in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        assert torch.equal(p, q), name
    with torch.no_grad():  # eval and no_grad run the plain path
        torch.testing.assert_close(checkpointed.eval()(images), plain.eval()(images))


def test_checkpointed_training_equals_plain_training(nut_inputs):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    maps = []
    for fields in ({}, {"gradient_checkpointing": True}):
        model = train_segmenter(*nut_inputs, SegmenterConfig(**TINY, **fields), 0, progress=False)
        maps.append(predict_tensor(model, images, pool_kernel=3)[0])
    torch.testing.assert_close(maps[1], maps[0])


class _NoBatchStatistics(Segmenter):
    """A network without BatchNorm: gradient accumulation then reproduces the full batch exactly."""

    name = "test-conv"

    def build(self, protocol):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))


@pytest.mark.parametrize("accum", [2, 3, 7])  # 7 samples: uneven micro-batches of 4+3 and 3+2+2
def test_accumulated_gradient_equals_the_full_batch(accum):
    segmenter = _NoBatchStatistics()
    torch.manual_seed(0)
    model = segmenter.build(None)
    images, masks = torch.rand(7, 3, 16, 16), (torch.rand(7, 16, 16) > 0.8).float()
    results = []
    for grad_accum in (1, accum):
        config = SegmenterConfig(batch_size=7, grad_accum=grad_accum)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keeps the weights, leaves .grad
        loss = train_step(model, segmenter, optimizer, images, masks, config)
        results.append((loss, [p.grad.clone() for p in model.parameters()]))
    (full_loss, full), (accum_loss, accumulated) = results
    assert accum_loss == pytest.approx(full_loss, rel=1e-6)
    for g_full, g_accum in zip(full, accumulated, strict=True):
        torch.testing.assert_close(g_accum, g_full, rtol=1e-5, atol=1e-7)
    assert any(g.abs().max() > 0 for g in full)


def test_channels_last_trains_to_the_same_model_up_to_float_rounding(nut_inputs):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    maps = []
    for fields in ({}, {"channels_last": True}):
        model = train_segmenter(*nut_inputs, SegmenterConfig(**TINY, **fields), 0, progress=False)
        maps.append(predict_tensor(model, images, pool_kernel=3)[0])
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-3, atol=1e-4)


def test_memory_knobs_are_validated_in_one_line(nut_inputs):
    for override, message in [
        ("segmenter.grad_accum=0", "segmenter.grad_accum=0: must be at least 1"),
        ("segmenter.grad_accum=32", "segmenter.grad_accum=32: must be at most segmenter.batch_size=16"),
        ("segmenter.gradient_checkpointing=sometimes", "segmenter.gradient_checkpointing: Input should be"),
        ("segmenter.channels_last=1", "segmenter.channels_last: Input should be a valid boolean"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            load_config("quick", [override])
        assert "\n" not in str(info.value)
    smp = create_segmenter("smp-unet", encoder_weights=None)
    with pytest.raises(DownstreamInputError, match="'smp-unet' does not support it"):
        config = SegmenterConfig(**TINY, gradient_checkpointing=True)
        train_segmenter(*nut_inputs, config, 0, progress=False, segmenter=smp)
    deeplab = create_segmenter("smp-deeplabv3plus", encoder_weights=None)
    with pytest.raises(DownstreamInputError, match="grad_accum=2 gives a batch of 1"):
        config = SegmenterConfig(**{**TINY, "grad_accum": 2})  # micro-batches of 2 and 1
        train_segmenter(*nut_inputs, config, 0, progress=False, segmenter=deeplab)


def test_job_keys_change_only_with_knobs_that_change_results():
    config = load_config("quick")
    before = downstream_hash(config, "g", "draem-unet")

    def key(**fields):
        return downstream_hash(
            dataclasses.replace(config, segmenter=dataclasses.replace(config.segmenter, **fields)),
            "g",
            "draem-unet",
        )

    assert key(gradient_checkpointing=True) == before  # same results, same key
    assert key(grad_accum=2) != before and key(channels_last=True) != before
    # at their defaults the knobs leave the key as it was before they existed
    fields = dataclasses.asdict(config.segmenter)
    assert config.segmenter.hash_fields() == {k: v for k, v in fields.items() if k not in KNOBS}

"""The segmenter's memory knobs: checkpointing (whole or chunked units), accumulation, NHWC, offload."""

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
KNOBS = ("gradient_checkpointing", "grad_accum", "channels_last", "unit_chunk", "offload_activations")


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


@pytest.mark.parametrize("chunk", [1, 2, 5])  # 5 images: chunks of 1, of 2+2+1, the whole batch
def test_chunked_units_give_the_full_batch_gradients_and_statistics(chunk):
    # float64: the chunked backward pass is the plain one's mathematics, so they agree to 1e-10
    # (in float32 BatchNorm amplifies the convolutions' chunk-dependent rounding)
    torch.manual_seed(0)
    plain = DiscriminativeUNet(base_width=4).double()
    chunked = DiscriminativeUNet(base_width=4, gradient_checkpointing=True, unit_chunk=chunk).double()
    chunked.load_state_dict(plain.state_dict())
    images = torch.rand(5, 3, 64, 64, dtype=torch.float64)
    masks = (torch.rand(5, 64, 64) > 0.9).double()
    for net in (plain, chunked):
        focal_loss(net(images), masks).backward()
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, p), q in zip(plain.named_buffers(), chunked.buffers(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-12, msg=name)  # updated once
    with torch.no_grad():
        torch.testing.assert_close(chunked.eval()(images), plain.eval()(images), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_offloaded_chunked_units_read_back_one_chunk_at_a_time(channels_last, monkeypatch):
    from anobench.downstream.offload import OnDisk, offloaded_activations

    torch.manual_seed(0)
    plain = DiscriminativeUNet(base_width=4).double()
    chunked = DiscriminativeUNet(base_width=4, gradient_checkpointing=True, unit_chunk=2).double()
    chunked.load_state_dict(plain.state_dict())
    images = torch.rand(5, 3, 64, 64, dtype=torch.float64)
    masks = (torch.rand(5, 64, 64) > 0.9).double()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
        plain, chunked = (net.to(memory_format=torch.channels_last) for net in (plain, chunked))
    reads, whole = [], []
    rows, read = OnDisk.rows, OnDisk.read
    monkeypatch.setattr(OnDisk, "rows", lambda self, a, b: reads.append(b - a) or rows(self, a, b))
    monkeypatch.setattr(OnDisk, "read", lambda self: whole.append(tuple(self.shape)) or read(self))
    focal_loss(plain(images), masks).backward()
    with offloaded_activations(min_bytes=4096) as folder:
        loss = focal_loss(chunked(images), masks)
        files = len(list(folder.iterdir()))
        loss.backward()
        del loss
        assert files > 10 and not list(folder.iterdir())
    # every unit's input and output come back in chunks of at most 2 images; only the tensors the
    # head and the loss save (7, outside the units) come back whole
    assert reads and max(reads) == 2 and len(whole) == 7
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_offloaded_activations_give_bitwise_the_same_gradients_and_clean_up(channels_last):
    from anobench.downstream.offload import offloaded_activations

    torch.manual_seed(0)
    plain = DiscriminativeUNet(base_width=4)
    offloaded = copy.deepcopy(plain)
    images, masks = torch.rand(3, 3, 64, 64), (torch.rand(3, 64, 64) > 0.9).float()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
        plain, offloaded = (net.to(memory_format=torch.channels_last) for net in (plain, offloaded))
    focal_loss(plain(images), masks).backward()
    with offloaded_activations(min_bytes=4096) as folder:
        loss = focal_loss(offloaded(images), masks)
        assert len(list(folder.iterdir())) > 10  # the saved activations are on disk
        loss.backward()
        del loss
        assert not list(folder.iterdir())  # each file goes once autograd releases it
    assert not folder.exists()
    for p, q in zip(plain.parameters(), offloaded.parameters(), strict=True):
        assert torch.equal(q.grad, p.grad)


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


@pytest.mark.parametrize(
    "fields",
    [{"channels_last": True}, {"gradient_checkpointing": True, "unit_chunk": 2, "offload_activations": True}],
)
def test_memory_knobs_train_to_the_same_model_up_to_float_rounding(nut_inputs, fields):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    maps = []
    for knobs in ({}, fields):
        model = train_segmenter(*nut_inputs, SegmenterConfig(**TINY, **knobs), 0, progress=False)
        maps.append(predict_tensor(model, images, pool_kernel=3)[0])
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-3, atol=1e-4)


def test_memory_knobs_are_validated_in_one_line(nut_inputs):
    for override, message in [
        ("segmenter.grad_accum=0", "segmenter.grad_accum=0: must be at least 1"),
        ("segmenter.grad_accum=32", "segmenter.grad_accum=32: must be at most segmenter.batch_size=16"),
        ("segmenter.gradient_checkpointing=sometimes", "segmenter.gradient_checkpointing: Input should be"),
        ("segmenter.channels_last=1", "segmenter.channels_last: Input should be a valid boolean"),
        ("segmenter.unit_chunk=4", "segmenter.unit_chunk=4: needs segmenter.gradient_checkpointing=true"),
        ("segmenter.unit_chunk=0", "segmenter.unit_chunk=0: needs .* a chunk of at least 1 image"),
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
    config = load_config("quick", ["segmenter.channels_last=false"])  # every knob at its default
    before = downstream_hash(config, "g", "draem-unet")

    def key(**fields):
        return downstream_hash(
            dataclasses.replace(config, segmenter=dataclasses.replace(config.segmenter, **fields)),
            "g",
            "draem-unet",
        )

    assert key(gradient_checkpointing=True) == before  # same results, same key
    assert key(offload_activations=True) == before
    assert key(grad_accum=2) != before and key(channels_last=True) != before
    assert key(gradient_checkpointing=True, unit_chunk=4) != before  # float rounding differs
    # at their defaults the knobs leave the key as it was before they existed
    fields = dataclasses.asdict(config.segmenter)
    assert config.segmenter.hash_fields() == {k: v for k, v in fields.items() if k not in KNOBS}


@pytest.mark.parametrize("momentum, affine", [(0.1, True), (None, True), (0.3, False)])
def test_in_place_batch_norm_relu_equals_the_module(momentum, affine):
    from anobench.downstream.segmenter import _batch_norm_relu_

    torch.manual_seed(0)
    norm = nn.BatchNorm2d(5, momentum=momentum, affine=affine).double().train()
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    twin = copy.deepcopy(norm)
    for _ in range(3):  # the cumulative average (momentum None) depends on the step count
        y = torch.randn(4, 5, 6, 6, dtype=torch.float64) * 3 + 1
        expected = norm(y).relu()
        var, mean = torch.var_mean(y, dim=(0, 2, 3), correction=0)
        with torch.no_grad():
            out = _batch_norm_relu_(y, twin, mean, var)
        assert out.data_ptr() == y.data_ptr()  # in place
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        for (name, a), b in zip(norm.named_buffers(), twin.buffers(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


def test_offload_maps_large_allocations_where_glibc_has_mallopt(monkeypatch):
    import ctypes

    from anobench.downstream import offload

    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    with offload.offloaded_activations():
        pass
    assert calls == [(offload.M_MMAP_THRESHOLD, 1 << 20)]

    def no_libc(name):
        raise OSError("no C library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert offload.map_large_allocations() is False


def test_thread_benchmark_workloads_each_define_a_training_step_that_runs():
    from anobench.benchmarks.perf.threads import WORKLOADS

    assert {"segmenter", "offline-base"} <= set(WORKLOADS)
    for name, code in WORKLOADS.items():
        namespace: dict = {}
        exec(code, namespace)  # what the benchmark's subprocess runs before timing
        namespace["step"]()
        assert namespace["opt"].state, f"{name}: the step updates the weights"


def test_thread_benchmark_variants_set_one_wait_mode(monkeypatch):
    import argparse

    from anobench.benchmarks.perf.threads import variant_env, variant_name

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what the package sets on import
    spin = variant_env("spin-3000")
    assert spin["GOMP_SPINCOUNT"] == "3000" and "OMP_WAIT_POLICY" not in spin
    active = variant_env("ACTIVE")
    assert active["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in active
    assert variant_name("spin-30") == "spin-30"
    for bad in ("spin-", "spin-x", "active"):
        with pytest.raises(argparse.ArgumentTypeError, match="ACTIVE, PASSIVE or spin-N"):
            variant_name(bad)

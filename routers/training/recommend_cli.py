"""``tiergate recommend``'s handler: read labels and prices, score (or read scores), print, plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from routers.training.data import DataError, load_user_jsonl
from routers.training.recommend import (
    format_table,
    operating_points,
    plot_recommendation,
    read_prices,
    read_rows,
    recommend,
    token_counts,
)


def _scores(args: argparse.Namespace, texts: list[str]) -> list[float]:
    if args.scores:
        lines = [json.loads(line) for line in Path(args.scores).read_text().splitlines() if line.strip()]
        by_index = {int(row["index"]): float(row["score"]) for row in lines}
        if sorted(by_index) != list(range(len(texts))):
            raise DataError(f"{args.scores}: needs one score per row of {args.data} (index 0..{len(texts) - 1})")
        return [by_index[i] for i in range(len(texts))]
    from routers.classifier import EncoderScorer
    from routers.training.report import score_sorted

    scorer = EncoderScorer.load(args.model, max_length=args.max_length, threads=args.threads)
    return score_sorted(scorer, texts, progress=not args.quiet)


def recommend_command(args: argparse.Namespace) -> int:
    path = Path(args.data)
    examples = load_user_jsonl(path)
    if not examples:
        raise DataError(f"{path}: no labelled rows")
    prices = read_prices(args.prices)
    missing = [m for m in (args.small_model, args.large_model) if m not in prices]
    if missing:
        raise DataError(f"{args.prices} has no price for {', '.join(missing)} (--small-model / --large-model)")
    texts = [e.text for e in examples]
    tokens = token_counts(read_rows(path), texts, args.completion_tokens)
    small_cost = [prices[args.small_model].cost(p, c) for p, c in tokens]
    large_cost = [prices[args.large_model].cost(p, c) for p, c in tokens]
    points = operating_points(_scores(args, texts), examples, small_cost, large_cost, args.monthly_requests)
    rec = recommend(points, args.min_quality, args.monthly_requests)
    print(f"{len(examples)} labelled rows; small = {args.small_model}, large = {args.large_model}\n")
    print(format_table(rec))
    if args.plot:
        plot_recommendation(rec, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(rec.as_dict(), indent=2) + "\n")
    return 0

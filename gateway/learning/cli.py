"""``tiergate labels stats`` and ``tiergate labels export``: what the label store holds, and training data from it."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.learning.open_store import open_store
from gateway.learning.records import LabelledRow, Stats
from gateway.learning.sqlite import SQLiteStore
from gateway.learning.store import LabelStore, StoreError
from gateway.settings import ConfigError, load_settings

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([hd])$")


def parse_since(value: str, now: float | None = None) -> float:
    """``7d`` / ``24h`` before now, or an ISO date/time (UTC unless it says otherwise), as unix seconds."""
    match = RELATIVE.match(value.strip())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now if now is not None else time.time()) - amount * (86_400 if unit == "d" else 3_600)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: expected 7d, 24h or an ISO date, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _store(args: argparse.Namespace) -> tuple[LabelStore, float]:
    url = args.store
    tie_margin = 0.1
    if url is None or args.config is not None:
        try:
            settings = load_settings(args.config)
        except ConfigError:
            if args.config is not None:
                raise
            settings = None
        if settings is not None:
            url = url or settings.learning.store
            tie_margin = settings.learning.judge.tie_margin
    store = open_store(url)
    if isinstance(store, SQLiteStore) and not store.path.exists():
        raise StoreError(f"no label store at {store.path} (learning has not recorded anything there yet)")
    store.open()
    return store, tie_margin


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def format_stats(stats: Stats) -> str:
    tiers = ", ".join(f"{tier}: {n}" for tier, n in sorted(stats.by_tier.items())) or "none"
    lines = [
        f"requests recorded      {stats.requests} ({tiers})",
        f"shadowed               {stats.shadowed} answered, {stats.shadow_failed} failed",
        f"judged                 {stats.judged} ({_pct(stats.judged, stats.shadowed)} of shadowed), "
        f"{stats.pending} waiting for the judge",
        "judge agreement        " + ("-" if stats.agreement is None else
                                     f"{100 * stats.agreement:.1f}% (both answer orders chose the same winner)"),
        f"small as good          the small tier was as good on {_pct(stats.small_as_good, stats.judged)} "
        f"of judged shadowed requests ({stats.small_as_good} of {stats.judged})",
    ]
    if stats.routed_quality is not None and stats.all_large_quality is not None:
        ratio = _pct(stats.routed_quality, stats.all_large_quality)
        lines.append(f"estimated quality      current routing {stats.routed_quality:.3f} vs all-large "
                     f"{stats.all_large_quality:.3f} ({ratio} of all-large)")
    mean = "-" if stats.feedback_mean is None else f"{stats.feedback_mean:.2f}"
    lines.append(f"user feedback          {stats.feedback} (mean score {mean})")
    lines.append(f"spent                  shadow {stats.shadow_cost_usd:.4f} USD, judge {stats.judge_cost_usd:.4f} USD")
    return "\n".join(lines)


def stats_command(args: argparse.Namespace) -> int:
    store, tie_margin = _store(args)
    try:
        stats = store.stats(tie_margin)
    finally:
        store.close()
    if args.json:
        print(orjson.dumps(dataclasses.asdict(stats), option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"label store            {store.url}")
        print(format_stats(stats))
    return 0


def export_line(row: LabelledRow) -> dict[str, Any]:
    """One line of the user JSONL ``tiergate train`` reads (routers.training.data.load_user_jsonl)."""
    return {"prompt": row.routing_text, "small_score": row.small_score, "large_score": row.large_score,
            "request_id": row.request_id, "tier": row.tier,
            "time": datetime.fromtimestamp(row.created_at, UTC).isoformat(timespec="seconds")}


def export_command(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        rows = store.labelled(args.since)
    finally:
        store.close()
    usable = [row for row in rows if row.routing_text]
    if len(rows) > len(usable):
        print(f"tiergate labels: {len(rows) - len(usable)} judged rows have no stored prompt (learning.include_prompts "
              "was off when they were recorded) and are left out", file=sys.stderr)
    if len(usable) < args.min_judged:
        print(f"tiergate labels: only {len(usable)} judged rows with prompts (--min-judged {args.min_judged}); "
              f"nothing written", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as handle:
        for row in usable:
            handle.write(orjson.dumps(export_line(row)) + b"\n")
    tmp.replace(out)
    print(f"wrote {len(usable)} labelled prompts to {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return int(args.labels_func(args))
    except StoreError as exc:
        print(f"tiergate labels: {exc}", file=sys.stderr)
        return 2


def add_commands(commands: Any) -> None:
    """Adds ``labels`` to the ``tiergate`` command."""
    labels = commands.add_parser("labels", help="the label store of learning from live traffic")
    sub = labels.add_subparsers(dest="labels_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings file whose learning.store to read (default: config/default.yaml)")
    common.add_argument("--store", help="a store URL (path, sqlite:///path, postgresql://...) instead of the config's")

    stats = sub.add_parser("stats", parents=[common], help="counts, judged share, agreement, small-as-good rate")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=run, labels_func=stats_command)

    export = sub.add_parser("export", parents=[common], help="write judged prompts as JSONL for `tiergate train`")
    export.add_argument("--out", required=True, help="the JSONL file to write")
    export.add_argument("--since", type=parse_since, default=None, help="only requests since: 7d, 24h or an ISO date")
    export.add_argument("--min-judged", type=int, default=0,
                        help="write nothing (exit 1) unless at least this many judged prompts are available")
    export.set_defaults(func=run, labels_func=export_command)

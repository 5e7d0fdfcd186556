"""Two groups of seed runs compared over their common seeds (the same as ``fairgptq compare --groups A B``).

    .venv/bin/python scripts/seed_group_difference.py runs/smollm2-seeds/points/000_alpha=0.0 \
        runs/research/recipe_default/points/000_alpha=0.0 --labels "plain, pairs H" "plain, WikiText-2 H"

The comparison is :func:`fairgptq.analysis.seed_tables.compare_groups`; this script keeps the commands
in docs/research.md working.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fairgptq.core.errors import ConfigError
from fairgptq.analysis.seed_tables import NotAGroup, compare_groups, groups_markdown

markdown = groups_markdown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--metrics", nargs="+", default=["crows_pairs.pct_stereotype", "wikitext2.perplexity"])
    ap.add_argument("--labels", nargs=2, default=("A", "B"))
    ap.add_argument("--allow-unpaired", action="store_true",
                    help="compare the common seeds when one group has seeds the other lacks (named in the output)")
    args = ap.parse_args()
    try:
        result = compare_groups(args.a, args.b, args.metrics, allow_unpaired=args.allow_unpaired)
    except ConfigError as e:  # NotAGroup, seeds without a partner, a record that is not a number
        ap.exit(2, f"seed_group_difference.py: error: {e}\n")
    print(markdown(result, tuple(args.labels)))


if __name__ == "__main__":
    main()

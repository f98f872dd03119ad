"""The evaluation report's pictures (matplotlib, no display needed).

* Recall@k curve: share of questions whose gold schema is among the top k, k = 1..10;
* EX by hardness for each schemas mode (retrieved / oracle / none);
* histogram of the top-1 retrieval score for hits vs misses (helps choose ``--min-score``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

HARDNESS_ORDER = ("easy", "medium", "hard", "extra")


def write_charts(results: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    """Draw the charts that the results support into ``out_dir``; return title -> file name.

    Args:
        results: schemas mode -> :class:`~coderag.evaluation.benchmark.BenchmarkResult`.
        out_dir: an existing directory.

    Returns:
        The charts written (a run without retrieval has no Recall@k curve or score histogram).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}
    rows = next(iter(results.values())).rows
    ranked = [r for r in rows if r.top1_score is not None]
    if ranked:
        ks = list(range(1, 11))
        recall = [sum(r.gold_rank is not None and r.gold_rank <= k for r in ranked) / len(ranked) for k in ks]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(ks, recall, marker="o")
        ax.set(xlabel="k", ylabel="Recall@k", ylim=(0, 1.02), title=f"Recall@k of the gold schema (n={len(ranked)})")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "recall_at_k.png", dpi=110)
        plt.close(fig)
        written["Recall@k"] = "recall_at_k.png"

        hits = [r.top1_score for r in ranked if r.gold_rank == 1]
        misses = [r.top1_score for r in ranked if r.gold_rank != 1]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = 20
        if hits:
            ax.hist(hits, bins=bins, alpha=0.6, label=f"top-1 is the gold schema ({len(hits)})")
        if misses:
            ax.hist(misses, bins=bins, alpha=0.6, label=f"top-1 is another schema ({len(misses)})")
        ax.set(xlabel="top-1 cosine score", ylabel="questions", title="Top-1 retrieval score: hits vs misses")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "top1_scores.png", dpi=110)
        plt.close(fig)
        written["Top-1 retrieval score, hits vs misses"] = "top1_scores.png"

    levels = [h for h in HARDNESS_ORDER if any(h in r.summary["by_hardness"] for r in results.values())]
    if levels:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / max(1, len(results))
        for j, (mode, result) in enumerate(results.items()):
            values = [result.summary["by_hardness"].get(h, {}).get("ex", 0.0) for h in levels]
            ax.bar([i + j * width for i in range(len(levels))], values, width=width, label=mode)
        counts = [next((r.summary["by_hardness"][h]["n"] for r in results.values() if h in r.summary["by_hardness"]), 0)
                  for h in levels]
        ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(levels))],
                      [f"{h}\n(n={c})" for h, c in zip(levels, counts, strict=True)])
        ax.set(ylabel="Execution Accuracy", ylim=(0, 1), title="EX by Spider hardness")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "ex_by_hardness.png", dpi=110)
        plt.close(fig)
        written["EX by hardness"] = "ex_by_hardness.png"
    return written

"""Component: score the candidate on held-out and benchmark questions (coderag.pipeline.stages.evaluate_stage)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import coderag_component


@coderag_component()
def evaluate(corpus_split: Input[Dataset], model: Input[Model], index: Input[Artifact], k: int, n_eval: int,
             max_new_tokens: int, n_candidates: int, sampling_temperature: float, examples: int, llm_base_url: str,
             llm_model: str, benchmark_dir: str, n_benchmark: int, seed: int, metrics: Output[Metrics],
             details: Output[Artifact], report: Output[Markdown], report_html: Output[HTML],
             generator: Input[Model] = None):
    """Recall@k / MRR@10 / nDCG@10 over the whole index and EX/EM (test-suite) with retrieval, logged as KFP
    metrics; per-question rows for the gate; the report as Markdown and HTML outputs (shown in the KFP UI).
    With ``generator`` (the finetune-generator step's adapter) that generator is scored, not ``llm_*``."""
    import tempfile
    from pathlib import Path

    from coderag.evaluation.report import combined_report
    from coderag.pipeline.stages import evaluate_stage

    report_dir = Path(tempfile.mkdtemp(prefix="coderag-report-"))
    scores = evaluate_stage(corpus_dir=corpus_split.path, model_dir=model.path, index_dir=index.path, k=k,
                            n_eval=n_eval, max_new_tokens=max_new_tokens, llm_base_url=llm_base_url,
                            llm_model=llm_model, benchmark_dir=benchmark_dir, n_benchmark=n_benchmark, seed=seed,
                            details_path=details.path, report_dir=report_dir, n_candidates=n_candidates,
                            sampling_temperature=sampling_temperature, examples=examples,
                            generator_dir=generator.path if generator is not None else "")
    for name, value in scores.items():
        metrics.log_metric(name, float(value))
    markdown, page = combined_report(report_dir)
    Path(report.path).write_text(markdown, encoding="utf-8")
    Path(report_html.path).write_text(page, encoding="utf-8")

"""The CodeRAG training pipeline: synthesize -> fine-tune -> build index -> evaluate -> gate -> deploy.

With ``generator_sft_steps`` > 0 a GPU step also fine-tunes the SQL generator (a LoRA adapter over
``llm_model``, or the offline SmolLM2 when empty) on the train side, and the evaluate step (then on a GPU
node) scores that adapter instead of the configured generator, so the gate judges the generator that was
trained; the adapter is an output artifact that the vLLM generator serves through ``--lora-modules``
(manifests/components/generator-lora). It is opt-in so the default run stays short.

The index is built past one machine on Kubeflow's own engine: ``plan-shards`` cuts the unique schemas
into shards of ``shard_size``, ``dsl.ParallelFor`` embeds each in its own pod (a GPU pod when
``index_device`` is "cuda"), and ``build-index`` merges the collected shards into one index of
``index_type``. A corpus below ``shard_size`` is one shard.

The graph runs inside a ``dsl.ExitHandler`` whose exit task records the run's final status (also when a
step fails, in which case nothing after the failed step runs, deploy included). The gate's ``passed``
output drives ``dsl.If``: deploy when it holds, otherwise a step records that deploy was skipped and why.

:func:`build_pipeline` makes the pipeline for a given image and placement (GPU requests, the LLM key
Secret); ``coderag_pipeline`` is the cluster default that ``pipelines/coderag_pipeline.yaml`` is compiled
from (``coderag pipeline compile``).
"""

import copy
from dataclasses import dataclass

from kfp import dsl, kubernetes

from components import (
    IMAGE,
    build_index,
    deploy,
    embed_shard,
    evaluate,
    finetune,
    finetune_generator,
    gate,
    plan_shards,
    record_run_status,
    skip_deploy,
    synthesize,
)

PIPELINE_NAME = "coderag-train-evaluate-deploy"
# Kubernetes Secret holding the LLM endpoint's API key; optional so runs on the local SmolLM2 need none.
LLM_SECRET_NAME = "coderag-llm"
LLM_SECRET_KEY = "api-key"
LLM_KEY_ENV = "CODERAG_LLM_API_KEY"
# Secret with the token the deploy step pushes to the GitOps repository with (https remotes); optional.
GITOPS_SECRET_NAME = "coderag-gitops"
GITOPS_SECRET_KEY = "token"
GITOPS_TOKEN_ENV = "CODERAG_PROMOTE_GIT_TOKEN"


@dataclass(frozen=True)
class Placement:
    """Where steps run on a cluster: resource requests, GPU for fine-tuning / synthesis, the key Secret.

    A GPU step also tolerates the ``accelerator_type`` taint GPU node pools usually carry.
    """

    gpu: bool = True
    accelerator_type: str = "nvidia.com/gpu"
    use_llm_secret: bool = True
    use_gitops_secret: bool = True


def _with_image(component, image: str):
    """``component`` bound to ``image`` (a copy; the module-level component is left as it is)."""
    if image == IMAGE:
        return component
    clone = copy.deepcopy(component)
    clone.component_spec.implementation.container.image = image
    return clone


def _resources(task, cpu: str, memory: str, *, gpu: bool = False, placement: Placement | None = None):
    task.set_cpu_request(cpu).set_memory_request(memory)
    if gpu and placement is not None and placement.gpu:
        task.set_accelerator_type(placement.accelerator_type).set_accelerator_limit(1)
        kubernetes.add_toleration(task, key=placement.accelerator_type, operator="Exists", effect="NoSchedule")
    return task


def _llm_key(task, placement: Placement):
    if placement.use_llm_secret:
        kubernetes.use_secret_as_env(task, secret_name=LLM_SECRET_NAME,
                                     secret_key_to_env={LLM_SECRET_KEY: LLM_KEY_ENV}, optional=True)
    return task


def build_pipeline(image: str = IMAGE, placement: Placement | None = None, profile: str = "laptop"):
    """The pipeline function for ``image``, ``placement`` (default: cluster placement with GPU) and ``profile``.

    The training profile decides where fine-tuning runs: ``"full"`` (all pairs, several epochs, a large
    CachedMNRL batch) asks for a GPU node, ``"laptop"`` (a few steps) a CPU pod. The parameter defaults of
    a profile are applied when compiling (:func:`pipelines.run.compile_pipeline`).
    """
    placement = placement or Placement()
    tune_on_gpu = profile == "full"
    ops = {c.name: _with_image(c, image) for c in (synthesize, finetune, finetune_generator, plan_shards, embed_shard,
                                                   build_index,
                                                   evaluate, gate, deploy, skip_deploy, record_run_status)}

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="CodeRAG: synthesize pairs, fine-tune the schema encoder, index, evaluate "
                              "(Recall@k, EM, EX), gate, and deploy/promote the release that passes.")
    def coderag_pipeline(
        corpus: str = "builtin",
        n_records: int = 2000,
        eval_fraction: float = 0.2,
        synth_backend: str = "offline",
        max_train_pairs: int = 256,
        n_negatives: int = 0,
        encoder: str = "",
        profile: str = "laptop",
        epochs: float = 1.0,
        batch_size: int = 16,
        max_steps: int = 16,
        learning_rate: float = 5e-5,
        cached: bool = False,
        k: int = 3,
        n_eval: int = 200,
        max_new_tokens: int = 128,
        n_candidates: int = 1,
        sampling_temperature: float = 0.7,
        examples: int = 0,
        llm_base_url: str = "",
        llm_model: str = "",
        benchmark_dir: str = "",
        n_benchmark: int = 200,
        min_recall_at_5: float = 0.5,
        min_execution_accuracy: float = 0.0,
        max_regression: float = 0.0,
        current_metrics: str = "",
        shard_size: int = 50000,
        index_device: str = "",
        index_type: str = "flat",
        lexical_weight: float = 0.3,
        deploy_dir: str = "",
        promote_repo: str = "",
        promote_env: str = "dev",
        generator_sft_steps: int = 0,
        seed: int = 0,
    ):
        exit_task = ops["record-run-status"]()
        _resources(exit_task, "100m", "256Mi").set_caching_options(False)
        with dsl.ExitHandler(exit_task, name="train-evaluate-deploy"):
            synth = ops["synthesize"](
                corpus=corpus, n_records=n_records, eval_fraction=eval_fraction, seed=seed,
                synth_backend=synth_backend, llm_base_url=llm_base_url, llm_model=llm_model,
                max_train_pairs=max_train_pairs, n_negatives=n_negatives)
            _llm_key(_resources(synth, "2", "4Gi", gpu=True, placement=placement), placement)

            tune = ops["finetune"](
                pairs=synth.outputs["pairs"], corpus_split=synth.outputs["corpus_split"], encoder=encoder,
                profile=profile, epochs=epochs, batch_size=batch_size, max_steps=max_steps,
                learning_rate=learning_rate, cached=cached, seed=seed)
            _resources(tune, "4", "16Gi" if tune_on_gpu else "8Gi", gpu=tune_on_gpu, placement=placement)

            plan = ops["plan-shards"](corpus_split=synth.outputs["corpus_split"], shard_size=shard_size)
            _resources(plan, "500m", "1Gi")
            with dsl.ParallelFor(plan.output, name="embed-shards") as shard:
                embedded = ops["embed-shard"](corpus_split=synth.outputs["corpus_split"], model=tune.outputs["model"],
                                              shard=shard, shard_size=shard_size, device=index_device)
                _resources(embedded, "4", "8Gi", gpu=True, placement=placement)
            index = ops["build-index"](corpus_split=synth.outputs["corpus_split"], model=tune.outputs["model"],
                                       shards=dsl.Collected(embedded.outputs["vectors"]), index_type=index_type,
                                       lexical_weight=lexical_weight, examples=examples)
            _resources(index, "2", "4Gi")

            def score_gate_deploy(generator=None):
                """evaluate -> gate -> deploy or skip; ``generator``: a tuned generator artifact to score (the
                evaluate step then loads it, on a GPU node) instead of the configured generator."""
                tuned = {} if generator is None else {"generator": generator}
                scores = ops["evaluate"](
                    corpus_split=synth.outputs["corpus_split"], model=tune.outputs["model"], index=index.outputs["index"],
                    k=k, n_eval=n_eval, max_new_tokens=max_new_tokens, n_candidates=n_candidates,
                    sampling_temperature=sampling_temperature, examples=examples, llm_base_url=llm_base_url,
                    llm_model=llm_model, benchmark_dir=benchmark_dir, n_benchmark=n_benchmark, seed=seed, **tuned)
                _llm_key(_resources(scores, "2", "6Gi", gpu=generator is not None, placement=placement), placement)
                scores.set_caching_options(False)  # the deployed baseline it is gated against changes

                verdict = ops["gate"](
                    metrics=scores.outputs["metrics"], details=scores.outputs["details"],
                    min_recall_at_5=min_recall_at_5, min_execution_accuracy=min_execution_accuracy,
                    max_regression=max_regression, current_metrics=current_metrics)
                _resources(verdict, "500m", "512Mi").set_caching_options(False)

                with dsl.If(verdict.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 - KFP condition
                    release = ops["deploy"](
                        model=tune.outputs["model"], index=index.outputs["index"], metrics=scores.outputs["metrics"],
                        details=scores.outputs["details"], decision=verdict.outputs["decision"],
                        deploy_dir=deploy_dir, promote_repo=promote_repo, promote_env=promote_env)
                    _resources(release, "500m", "1Gi").set_caching_options(False)
                    if placement.use_gitops_secret:
                        kubernetes.use_secret_as_env(release, secret_name=GITOPS_SECRET_NAME,
                                                     secret_key_to_env={GITOPS_SECRET_KEY: GITOPS_TOKEN_ENV},
                                                     optional=True)
                with dsl.Else(name="gate-failed"):
                    skipped = ops["skip-deploy"](decision=verdict.outputs["decision"])
                    _resources(skipped, "100m", "256Mi").set_caching_options(False)

            # Without the SFT step the configured generator is scored; with it, the adapter it just trained
            # (a KFP output made inside a condition cannot reach a task outside it, so each branch has its tail).
            with dsl.If(generator_sft_steps <= 0, name="configured-generator"):
                score_gate_deploy()
            with dsl.Else(name="generator-sft"):
                sft = ops["finetune-generator"](
                    corpus_split=synth.outputs["corpus_split"], base_model=llm_model, max_steps=generator_sft_steps,
                    batch_size=8, learning_rate=2e-4, k=k, seed=seed)
                _resources(sft, "4", "16Gi", gpu=True, placement=placement)
                score_gate_deploy(sft.outputs["generator"])

    return coderag_pipeline


coderag_pipeline = build_pipeline()

"""KFP v2 components of the CodeRAG pipeline: one per stage, each a thin shell over ``coderag``.

Every component runs in the project's own image (:data:`components.image.IMAGE`), where ``coderag`` is
installed, so the function bodies import it and call one core function; the local runner
(``kfp.local.SubprocessRunner(use_venv=False)``) runs the same bodies in the current interpreter.
"""

from components.build_index import build_index, embed_shard, plan_shards
from components.deploy import deploy
from components.evaluate import evaluate
from components.finetune import finetune
from components.finetune_generator import finetune_generator
from components.gate import gate
from components.image import IMAGE
from components.outcome import record_run_status, skip_deploy
from components.synthesize import synthesize

ALL_COMPONENTS = (synthesize, finetune, finetune_generator, plan_shards, embed_shard, build_index, evaluate, gate, deploy, skip_deploy, record_run_status)

__all__ = ["IMAGE", "ALL_COMPONENTS", "synthesize", "finetune", "finetune_generator", "plan_shards", "embed_shard", "build_index", "evaluate", "gate", "deploy",
           "skip_deploy", "record_run_status"]

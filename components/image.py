"""The image every component runs in, and the decorator that binds a component to it."""

import functools

from kfp import dsl

# Built from the repository's Dockerfile (coderag + its dependencies installed). Pipelines can swap it
# with ``pipelines.coderag_pipeline.build_pipeline(image=...)`` (e.g. a digest-pinned build).
IMAGE = "ghcr.io/coderag/coderag:0.1.0"

# kfp is already in the image: no pip install at container start (and none that needs the network).
coderag_component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)

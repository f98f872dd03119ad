"""The image a release deploys: what ``scripts/build-image.sh`` recorded, as a digest-pinned reference.

``scripts/build-image.sh`` writes ``build/image.json`` (name, local digest, size, and, when it pushed the
image, the destination and the digest the registry got). Only a pushed digest can be released: the local
one names an uncompressed manifest no registry holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from coderag.release.promotion import PromotionError, image_reference

_DOCKER_DESTINATION = re.compile(r"^docker://(?P<repository>[a-z0-9][a-z0-9._\-/:]*?)(?::[\w][\w.\-]{0,127})?$")


def pushed_image(build_record: Path | str) -> str:
    """The ``<repository>@sha256:...`` reference of the image ``build_record`` says was pushed.

    Args:
        build_record: ``build/image.json`` as written by ``scripts/build-image.sh``.

    Returns:
        The pushed repository (tag dropped) pinned by the digest the registry got.

    Raises:
        PromotionError: the file is missing or not a build record, or it records no push to a registry.

    Example:
        >>> pushed_image("build/image.json")  # doctest: +SKIP
        'registry.example.com/me/coderag@sha256:...'
    """
    path = Path(build_record)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PromotionError(f"cannot read the build record {path} ({exc}): run scripts/build-image.sh") from exc
    pushed = record.get("pushed") if isinstance(record, dict) else None
    if not isinstance(pushed, dict) or not pushed.get("destination") or not pushed.get("digest"):
        raise PromotionError(
            f"{path} records no pushed image: push it with CODERAG_IMAGE_PUSH=docker://REGISTRY/REPO:TAG "
            "bash scripts/build-image.sh, or pass --image REPO@sha256:DIGEST"
        )
    found = _DOCKER_DESTINATION.match(str(pushed["destination"]))
    if found is None:
        raise PromotionError(
            f"{path} records a push to {pushed['destination']!r}, which no cluster can pull: "
            "push to a registry (docker://REGISTRY/REPO:TAG)"
        )
    return image_reference("", f"{found.group('repository')}@{pushed['digest']}")

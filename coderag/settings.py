"""Typed settings, one object per service.

Every service (CLI main job, retriever, generator, RAG endpoint, pipeline submission, promotion) has
one settings class derived from :class:`CodeRAGSettings`. Values come from flags (passed as keyword
arguments) and ``CODERAG_*`` environment variables; nothing else in the code reads the environment.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class CodeRAGSettings(BaseSettings):
    """Base for every settings object: ``CODERAG_`` environment prefix, flags override env."""

    model_config = SettingsConfigDict(env_prefix="CODERAG_", extra="forbid", validate_default=True)

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict with secrets masked (safe to log)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else ""
            elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
                value = str(value)
            out[name] = value
        return out

    def log_startup(self, service: str) -> None:
        """Log the effective settings once, at start-up."""
        log.info("settings service=%s %s", service, json.dumps(self.describe(), sort_keys=True))

    @classmethod
    def from_values(cls, **values: Any):
        """Settings from ``values`` and defaults only, never the environment.

        For a settings object one service derives from its own (the RAG endpoint's in-process
        retriever): that service's settings are the one source, read once.
        """

        class ValuesOnly(cls):
            @classmethod
            def settings_customise_sources(cls_, settings_cls, init_settings, **_sources):
                return (init_settings,)

        ValuesOnly.__name__ = ValuesOnly.__qualname__ = cls.__name__
        return ValuesOnly(**values)

    @classmethod
    def from_flags(cls, **flags: Any):
        """Build settings from CLI flags; flags left as ``None`` fall back to env, then defaults."""
        return cls(**{k: v for k, v in flags.items() if v is not None})

    @classmethod
    def from_args(cls, args: Any, service: str, **extra: Any):
        """Settings from an argparse namespace (one attribute per field) plus ``extra``, logged once.

        An invalid value raises :class:`~coderag.errors.ConfigError` naming the setting, so the CLI
        prints one line instead of pydantic's multi-line report.
        """
        from pydantic import ValidationError

        from coderag.errors import ConfigError

        flags = {name: getattr(args, name, None) for name in cls.model_fields}
        flags.update(extra)
        try:
            settings = cls.from_flags(**flags)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
        settings.log_startup(service)
        return settings

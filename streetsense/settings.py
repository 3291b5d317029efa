"""Configuration: environment variables (``STREETSENSE_*``, ``DATABASE_URL``,
``MQTT_URL``) over an optional TOML file (``STREETSENSE_CONFIG`` or
``./streetsense.toml``) over defaults.

>>> s = Settings(_env_file=None, database_url="postgresql://localhost/x")
>>> s.database_url, s.ingest_batch_readings
('postgresql://localhost/x', 5000)
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


def _config_file() -> Path:
    return Path(os.environ.get("STREETSENSE_CONFIG", "streetsense.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREETSENSE_", extra="ignore", populate_by_name=True)

    #: PostgreSQL URL; unset = start the embedded PostgreSQL in ``data_dir``.
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "STREETSENSE_DATABASE_URL", "database_url"))
    #: MQTT URL (mqtt://user:password@host:port); unset = start a local broker.
    mqtt_url: str | None = Field(default=None, validation_alias=AliasChoices("MQTT_URL", "STREETSENSE_MQTT_URL", "mqtt_url"))
    #: Where embedded services keep their data.
    data_dir: Path = Path("var")
    #: Use TimescaleDB when the server has it ("auto"), insist ("on"), or never ("off").
    timescale: Literal["auto", "on", "off"] = "auto"
    #: Raw readings are kept this long; hourly/daily aggregates are kept.
    retention_days: int = 730

    ingest_group: str = "ingest"
    #: MQTT client ids are "<prefix>-<slot>"; keep them stable so a restarted
    #: worker resumes its persistent session. Default "<group>-<hostname>".
    ingest_client_prefix: str | None = None
    ingest_batch_readings: int = 5000
    ingest_batch_ms: int = 200
    #: MQTT 5 Receive Maximum: unacknowledged messages the broker may send a worker.
    ingest_receive_maximum: int = 2000
    ingest_metrics_port: int = 0
    ingest_use_copy: Literal["auto", "on", "off"] = "auto"
    #: database connections per worker (1 for servers that take one at a time)
    ingest_pool_size: int = 2

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    #: Bearer token for the API until per-user auth lands; unset = open (dev only).
    api_token: SecretStr | None = None

    log_level: str = "INFO"
    log_json: bool = False

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file()), file_secret_settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()

"""Configuration: environment variables (``STREETSENSE_*``, ``DATABASE_URL``,
``MQTT_URL``) over an optional TOML file (``STREETSENSE_CONFIG`` or
``./streetsense.toml``) over defaults.

>>> s = Settings(_env_file=None, database_url="postgresql://localhost/x")
>>> s.database_url, s.ingest_batch_readings
('postgresql://localhost/x', 5000)

Secrets (database and MQTT URLs with passwords, the API token, the pseudonym
key) come from the environment or from files: ``<VARIABLE>_FILE`` names a file
holding the value (``DATABASE_URL_FILE``, ``MQTT_URL_FILE``,
``STREETSENSE_API_TOKEN_FILE``, ``STREETSENSE_PSEUDONYM_KEY_FILE``).  A secret
file must be private to its owner (``chmod 600``): one readable or writable by
group or others is refused with :class:`SecretFileError`, and setting both a
variable and its ``_FILE`` is refused as ambiguous.
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


def _config_file() -> Path:
    return Path(os.environ.get("STREETSENSE_CONFIG", "streetsense.toml"))


class SecretFileError(ValueError):
    """A secret file that is missing, empty, or not private to its owner."""


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The secret held in ``path`` (one trailing newline stripped), refusing files others can use.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "k").write_text("s3cret\\n") and os.chmod(d / "k", 0o600)
    >>> read_secret_file(d / "k")
    's3cret'
    >>> os.chmod(d / "k", 0o640)
    >>> read_secret_file(d / "k")
    Traceback (most recent call last):
    ...
    streetsense.settings.SecretFileError: secret file ... is accessible to group/others (mode 0640): run `chmod 600 ...`
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise SecretFileError(f"secret file {p} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretFileError(f"secret file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise SecretFileError(f"secret file {p} is accessible to group/others (mode {stat.S_IMODE(st.st_mode):04o}): "
                              f"run `chmod 600 {p}`")
    value = p.read_text()
    value = value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
    if not value:
        raise SecretFileError(f"secret file {p} is empty")
    return value


#: setting -> (the variables that may hold it, the variables that may name a file holding it)
SECRET_SETTINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "database_url": (("DATABASE_URL", "STREETSENSE_DATABASE_URL"),
                     ("DATABASE_URL_FILE", "STREETSENSE_DATABASE_URL_FILE")),
    "mqtt_url": (("MQTT_URL", "STREETSENSE_MQTT_URL"), ("MQTT_URL_FILE", "STREETSENSE_MQTT_URL_FILE")),
    "api_token": (("STREETSENSE_API_TOKEN",), ("STREETSENSE_API_TOKEN_FILE",)),
    "pseudonym_key": (("STREETSENSE_PSEUDONYM_KEY",), ("STREETSENSE_PSEUDONYM_KEY_FILE",)),
}


class _SecretFiles(PydanticBaseSettingsSource):
    """``<VARIABLE>_FILE``: the setting's value is the content of that (private) file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (plain, files) in SECRET_SETTINGS.items():
            given = [v for v in files if os.environ.get(v)]
            if not given:
                continue
            both = [v for v in plain if os.environ.get(v)]
            if both:
                raise SecretFileError(f"both {both[0]} and {given[0]} are set: use one")
            out[name] = read_secret_file(os.environ[given[0]])
        return out


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
    #: Backstop: no raw reading is kept longer than this (whole partitions /
    #: chunks are dropped); hourly/daily aggregates are kept.  The default covers
    #: the longest per-class policy (public sensor readings, 10 years); the
    #: per-class policies (``streetsense retention``) delete earlier.
    retention_days: int = 3653

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
    #: per-device rate limit: readings per second of the device's own clock (0 = off), and
    #: the bucket size; over it a pack is quarantined ``rate_limited`` (docs/bad-input.md)
    ingest_rate_readings_per_s: float = 20.0
    ingest_rate_burst: int = 2000

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    #: Bearer token for the API until per-user auth lands; unset = open (dev only).
    api_token: SecretStr | None = None
    #: The council's key for household pseudonyms (HMAC-SHA256, streetsense.pseudonym); set it
    #: through STREETSENSE_PSEUDONYM_KEY_FILE.
    pseudonym_key: SecretStr | None = None

    log_level: str = "INFO"
    log_json: bool = False

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SecretFiles(settings_cls),
                TomlConfigSettingsSource(settings_cls, toml_file=_config_file()), file_secret_settings)

    def secret_values(self) -> list[str]:
        """Every secret these settings hold (URL passwords, token, key): what logs must never show.

        >>> Settings(_env_file=None, database_url="postgresql://u:pw1@db/x", mqtt_url="mqtt://a:pw2@b",
        ...          api_token="tok").secret_values()
        ['pw1', 'pw2', 'tok']
        """
        out = []
        for url in (self.database_url, self.mqtt_url):
            if url:
                try:
                    pw = urlsplit(url).password
                except ValueError:
                    pw = None
                if pw:
                    out.append(pw)
        out += [s.get_secret_value() for s in (self.api_token, self.pseudonym_key) if s is not None]
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()

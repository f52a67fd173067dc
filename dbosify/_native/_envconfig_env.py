"""The ``TEMPORAL_*`` environment variables applied over a profile, and where the config file
is read from (the user's config directory, as sdk-core finds it). Part of `dbosify._native.envconfig`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping

from dbosify._native._envconfig_model import (
    _DEFAULT_CONFIG_FILE,
    _TLS,
    ConfigError,
    _Codec,
    _Profile,
    _rust_debug_str,
    _Source,
)

# ---------------------------------------------------------------------------
# Environment access
# ---------------------------------------------------------------------------


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Env:
    """Environment variables from an explicit mapping, or the process's."""

    def __init__(self, mapping: Mapping[str, str] | None) -> None:
        self._mapping = mapping

    def get(self, key: str) -> str | None:
        if self._mapping is not None:
            return self._mapping.get(key)
        value = os.environ.get(key)
        if value is not None and _has_surrogates(value):
            # std::env::var refuses values that are not valid unicode.
            raise ConfigError(
                "Configuration loading error: environment variable was not valid unicode: "
                + _rust_debug_str(value)
            )
        return value

    def contains(self, key: str) -> bool:
        if self._mapping is not None:
            return key in self._mapping
        value = os.environ.get(key)
        return value is not None and not _has_surrogates(value)

    def items(self) -> Iterator[tuple[str, str]]:
        if self._mapping is not None:
            yield from self._mapping.items()
            return
        for key, value in list(os.environ.items()):
            if _has_surrogates(key):
                continue
            if _has_surrogates(value):
                if key.startswith(_GRPC_META_PREFIX):
                    raise ConfigError(
                        f"Configuration loading error: environment variable {key} "
                        "is not valid unicode"
                    )
                continue
            yield key, value


def _env_var_to_bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def _normalize_grpc_meta_key(key: str) -> str:
    return key.lower().replace("_", "-")


_TLS_ENV_VARS = (
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
)
_CODEC_ENV_VARS = ("TEMPORAL_CODEC_ENDPOINT", "TEMPORAL_CODEC_AUTH")
_GRPC_META_PREFIX = "TEMPORAL_GRPC_META_"


def _env_source(
    env: _Env, what: str, path_var: str, data_var: str, current: _Source | None
) -> _Source | None:
    path = env.get(path_var)
    data = env.get(data_var)
    if path is not None and data is not None:
        raise ConfigError(f"Invalid configuration: Cannot specify both {path_var} and {data_var}")
    if path is not None:
        if current is not None and current[0] == "data":
            raise ConfigError(
                f"Invalid configuration: Cannot specify {what} path via {path_var} "
                f"when {what} data is already specified"
            )
        return ("path", path)
    if data is not None:
        if current is not None and current[0] == "path":
            raise ConfigError(
                f"Invalid configuration: Cannot specify {what} data via {data_var} "
                f"when {what} path is already specified"
            )
        return ("data", data.encode("utf-8"))
    return current


def _apply_env(profile: _Profile, env: _Env) -> None:
    address = env.get("TEMPORAL_ADDRESS")
    if address is not None:
        profile.address = address
    namespace = env.get("TEMPORAL_NAMESPACE")
    if namespace is not None:
        profile.namespace = namespace
    api_key = env.get("TEMPORAL_API_KEY")
    if api_key is not None:
        profile.api_key = api_key

    if profile.tls is None and any(env.contains(k) for k in _TLS_ENV_VARS):
        profile.tls = _TLS()
    tls = profile.tls
    if tls is not None:
        enabled_text = env.get("TEMPORAL_TLS")
        if enabled_text is not None:
            enabled = _env_var_to_bool(enabled_text)
            if enabled is not None:
                tls.disabled = not enabled
        tls.client_cert = _env_source(
            env,
            "cert",
            "TEMPORAL_TLS_CLIENT_CERT_PATH",
            "TEMPORAL_TLS_CLIENT_CERT_DATA",
            tls.client_cert,
        )
        tls.client_key = _env_source(
            env,
            "key",
            "TEMPORAL_TLS_CLIENT_KEY_PATH",
            "TEMPORAL_TLS_CLIENT_KEY_DATA",
            tls.client_key,
        )
        tls.server_ca_cert = _env_source(
            env,
            "server CA cert",
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
            "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
            tls.server_ca_cert,
        )
        server_name = env.get("TEMPORAL_TLS_SERVER_NAME")
        if server_name is not None:
            tls.server_name = server_name
        verify_text = env.get("TEMPORAL_TLS_DISABLE_HOST_VERIFICATION")
        if verify_text is not None:
            disable_verify = _env_var_to_bool(verify_text)
            if disable_verify is not None:
                tls.disable_host_verification = disable_verify

    if profile.codec is None and any(env.contains(k) for k in _CODEC_ENV_VARS):
        profile.codec = _Codec()
    codec = profile.codec
    if codec is not None:
        endpoint = env.get("TEMPORAL_CODEC_ENDPOINT")
        if endpoint is not None:
            codec.endpoint = endpoint
        auth = env.get("TEMPORAL_CODEC_AUTH")
        if auth is not None:
            codec.auth = auth

    for key, value in env.items():
        if not key.startswith(_GRPC_META_PREFIX):
            continue
        header = _normalize_grpc_meta_key(key[len(_GRPC_META_PREFIX) :])
        if value:
            profile.grpc_meta[header] = value
        else:
            profile.grpc_meta.pop(header, None)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _lossy(text: str) -> str:
    """Like Rust's ``to_string_lossy`` for a path that came from the OS."""
    if not _has_surrogates(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _home_dir() -> str | None:
    home = os.environ.get("HOME")
    if home:
        return home
    if sys.platform == "win32":
        profile = os.environ.get("USERPROFILE")
        return profile or None
    try:
        import pwd

        entry_dir = pwd.getpwuid(os.geteuid()).pw_dir
    except (ImportError, KeyError, OSError):
        return None
    return entry_dir or None


def _user_config_dir() -> str | None:
    """The per-user configuration directory, as the ``dirs`` crate finds it."""
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        return appdata or None
    if sys.platform == "darwin":
        home = _home_dir()
        return None if home is None else os.path.join(home, "Library", "Application Support")
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return xdg
    home = _home_dir()
    return None if home is None else os.path.join(home, ".config")


def _default_config_file_path() -> str | None:
    config_dir = _user_config_dir()
    if config_dir is None:
        return None
    return _lossy(os.path.join(config_dir, "temporalio", _DEFAULT_CONFIG_FILE))


def _os_error_text(err: OSError) -> str:
    if err.errno is not None and err.strerror:
        return f"{err.strerror} (os error {err.errno})"
    return str(err)


def _read_path_bytes(path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"Configuration loading error: {_os_error_text(err)}") from None

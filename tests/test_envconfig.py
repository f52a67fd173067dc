"""Tests for ``dbosify._native.envconfig``, the pure-Python replacement of the
native ``temporalio.bridge.temporal_sdk_bridge.envconfig`` submodule.

Two kinds of tests:

* direct tests of the replacement, which need no import hook, and
* comparison tests that run the replacement and the real native module (from
  the temporalio wheel) on the same inputs and require the same outcome. They
  are skipped when the native extension cannot be loaded.
"""

from __future__ import annotations

import glob
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Import the submodule itself: ``from dbosify._native import envconfig`` may find
# a placeholder attribute of the package instead.
ours: Any = importlib.import_module("dbosify._native.envconfig")


def _load_native_envconfig() -> ModuleType | None:
    """The real extension's envconfig submodule, even when an import hook
    serves ``temporalio.bridge.temporal_sdk_bridge`` from dbosify."""
    bridge: ModuleType | None
    try:
        bridge = importlib.import_module("temporalio.bridge.temporal_sdk_bridge")
    except ImportError:
        bridge = None
    if bridge is not None:
        origin = getattr(bridge, "__file__", "") or ""
        candidate = getattr(bridge, "envconfig", None)
        if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) and candidate:
            return candidate  # type: ignore[no-any-return]
    spec = importlib.util.find_spec("temporalio.bridge")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            for so_path in glob.glob(os.path.join(location, "temporal_sdk_bridge" + suffix)):
                try:
                    so_spec = importlib.util.spec_from_file_location("temporal_sdk_bridge", so_path)
                    if so_spec is None or so_spec.loader is None:
                        continue
                    module = importlib.util.module_from_spec(so_spec)
                    so_spec.loader.exec_module(module)
                except Exception:
                    continue
                return getattr(module, "envconfig", None)
    return None


_native_module = _load_native_envconfig()


@pytest.fixture
def native() -> Any:
    if _native_module is None:
        pytest.skip("native temporalio bridge extension cannot be imported")
    return _native_module


@pytest.fixture(autouse=True)
def _clean_temporal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the process environment from leaking into tests that read it."""
    for key in list(os.environ):
        if key.startswith("TEMPORAL_"):
            monkeypatch.delenv(key)


FULL_TOML = """
[profile.default]
address = "localhost:7233"
namespace = "default-ns"

[profile.prod]
address = "prod.example:7233"
namespace = "prod-ns"
api_key = "prod-key"

[profile.prod.tls]
server_name = "prod.example"
client_cert_path = "/certs/client.pem"
client_key_data = "KEYDATA"

[profile.prod.codec]
endpoint = "https://codec.example"
auth = "Bearer abc"

[profile.prod.grpc_meta]
Custom_Header = "v1"
other-header = "v2"
"""


def _profile(mod: Any, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "profile": None,
        "path": None,
        "data": None,
        "disable_file": False,
        "disable_env": False,
        "config_file_strict": False,
        "env_vars": {},
    }
    args.update(kwargs)
    return mod.load_client_connect_config(**args)  # type: ignore[no-any-return]


def _config(mod: Any, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "path": None,
        "data": None,
        "config_file_strict": False,
        "env_vars": {},
    }
    args.update(kwargs)
    return mod.load_client_config(**args)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# Direct tests of the replacement
# ---------------------------------------------------------------------------


def test_module_surface() -> None:
    assert sorted(ours.__all__) == [
        "ConfigError",
        "load_client_config",
        "load_client_connect_config",
    ]
    assert issubclass(ours.ConfigError, RuntimeError)


def test_all_profiles() -> None:
    config = _config(ours, data=FULL_TOML.encode())
    assert config == {
        "default": {"address": "localhost:7233", "namespace": "default-ns"},
        "prod": {
            "address": "prod.example:7233",
            "namespace": "prod-ns",
            "api_key": "prod-key",
            "tls": {
                "disabled": None,
                "client_cert": {"path": "/certs/client.pem"},
                "client_key": {"data": b"KEYDATA"},
                "server_name": "prod.example",
                "disable_host_verification": False,
            },
            "codec": {"endpoint": "https://codec.example", "auth": "Bearer abc"},
            "grpc_meta": {"custom-header": "v1", "other-header": "v2"},
        },
    }


def test_load_client_config_ignores_env_overrides() -> None:
    config = _config(
        ours, data=FULL_TOML.encode(), env_vars={"TEMPORAL_ADDRESS": "env", "TEMPORAL_PROFILE": "x"}
    )
    assert config["default"]["address"] == "localhost:7233"


def test_default_profile() -> None:
    assert _profile(ours, data=FULL_TOML.encode()) == {
        "address": "localhost:7233",
        "namespace": "default-ns",
    }


def test_named_profile_and_env_profile() -> None:
    prod = _profile(ours, profile="prod", data=FULL_TOML.encode())
    assert prod["api_key"] == "prod-key"
    via_env = _profile(ours, data=FULL_TOML.encode(), env_vars={"TEMPORAL_PROFILE": "prod"})
    assert via_env == prod
    # The argument wins over TEMPORAL_PROFILE.
    explicit = _profile(
        ours, profile="default", data=FULL_TOML.encode(), env_vars={"TEMPORAL_PROFILE": "prod"}
    )
    assert explicit["address"] == "localhost:7233"


def test_profile_not_found() -> None:
    with pytest.raises(ours.ConfigError, match="^Profile 'nope' not found$"):
        _profile(ours, profile="nope", data=FULL_TOML.encode())
    with pytest.raises(ours.ConfigError, match="Profile 'nope' not found"):
        _profile(ours, data=FULL_TOML.encode(), env_vars={"TEMPORAL_PROFILE": "nope"})
    # A missing default profile is just empty.
    assert _profile(ours, data=b'[profile.other]\naddress = "x"\n') == {}


def test_env_overrides() -> None:
    env = {
        "TEMPORAL_ADDRESS": "env:1234",
        "TEMPORAL_NAMESPACE": "env-ns",
        "TEMPORAL_API_KEY": "env-key",
        "TEMPORAL_CODEC_ENDPOINT": "http://codec",
        "TEMPORAL_GRPC_META_SOME_KEY": "meta",
    }
    assert _profile(ours, data=FULL_TOML.encode(), env_vars=env) == {
        "address": "env:1234",
        "namespace": "env-ns",
        "api_key": "env-key",
        "codec": {"endpoint": "http://codec"},
        "grpc_meta": {"some-key": "meta"},
    }


def test_tls_env_vars() -> None:
    env = {
        "TEMPORAL_TLS": "false",
        "TEMPORAL_TLS_SERVER_NAME": "sni",
        "TEMPORAL_TLS_SERVER_CA_CERT_DATA": "CA",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": "/c.pem",
        "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION": "TRUE",
    }
    assert _profile(ours, disable_file=True, env_vars=env) == {
        "tls": {
            "disabled": True,
            "client_cert": {"path": "/c.pem"},
            "server_ca_cert": {"data": b"CA"},
            "server_name": "sni",
            "disable_host_verification": True,
        }
    }
    # An unparsable boolean still creates the TLS section but changes nothing.
    assert _profile(ours, disable_file=True, env_vars={"TEMPORAL_TLS": "yes"}) == {
        "tls": {"disabled": None, "disable_host_verification": False}
    }


def test_tls_conflicts() -> None:
    with pytest.raises(ours.ConfigError, match="Cannot specify both TEMPORAL_TLS_CLIENT_KEY_PATH"):
        _profile(
            ours,
            disable_file=True,
            env_vars={"TEMPORAL_TLS_CLIENT_KEY_PATH": "p", "TEMPORAL_TLS_CLIENT_KEY_DATA": "d"},
        )
    with pytest.raises(ours.ConfigError, match="when cert path is already specified"):
        _profile(
            ours,
            profile="prod",
            data=FULL_TOML.encode(),
            env_vars={"TEMPORAL_TLS_CLIENT_CERT_DATA": "d"},
        )
    with pytest.raises(ours.ConfigError, match="when key data is already specified"):
        _profile(
            ours,
            profile="prod",
            data=FULL_TOML.encode(),
            env_vars={"TEMPORAL_TLS_CLIENT_KEY_PATH": "p"},
        )
    toml = b'[profile.default.tls]\nclient_cert_path = "a"\nclient_cert_data = "b"\n'
    with pytest.raises(
        ours.ConfigError,
        match="^Invalid configuration: Cannot specify both client_cert_path and client_cert_data$",
    ):
        _config(ours, data=toml)


def test_grpc_meta_env_override_and_removal() -> None:
    env = {
        "TEMPORAL_GRPC_META_CUSTOM_HEADER": "new",
        "TEMPORAL_GRPC_META_OTHER_HEADER": "",
        "TEMPORAL_GRPC_META_ADDED": "a",
    }
    profile = _profile(ours, profile="prod", data=FULL_TOML.encode(), env_vars=env)
    assert profile["grpc_meta"] == {"custom-header": "new", "added": "a"}


def test_missing_file() -> None:
    missing = "/nonexistent/dir/temporal.toml"
    assert _config(ours, path=missing) == {}
    assert _profile(ours, path=missing) == {}
    assert _config(ours, env_vars={"TEMPORAL_CONFIG_FILE": missing}) == {}
    with pytest.raises(ours.ConfigError, match="Profile 'prod' not found"):
        _profile(ours, profile="prod", path=missing)


def test_config_file_from_env_and_path(tmp_path: Path) -> None:
    file = tmp_path / "conf.toml"
    file.write_text(FULL_TOML)
    assert _config(ours, path=str(file)) == _config(ours, data=FULL_TOML.encode())
    assert _config(ours, env_vars={"TEMPORAL_CONFIG_FILE": str(file)}) == _config(
        ours, data=FULL_TOML.encode()
    )
    # An explicit path wins over TEMPORAL_CONFIG_FILE.
    other = tmp_path / "other.toml"
    other.write_text('[profile.default]\naddress = "other"\n')
    assert _profile(ours, path=str(other), env_vars={"TEMPORAL_CONFIG_FILE": str(file)}) == {
        "address": "other"
    }
    # A directory is an I/O error.
    with pytest.raises(ours.ConfigError, match="^Configuration loading error: .*os error"):
        _config(ours, path=str(tmp_path))


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("checks the XDG layout")
    xdg = tmp_path / "xdg"
    (xdg / "temporalio").mkdir(parents=True)
    (xdg / "temporalio" / "temporal.toml").write_text('[profile.default]\naddress = "xdg"\n')
    home = tmp_path / "home"
    (home / ".config" / "temporalio").mkdir(parents=True)
    (home / ".config" / "temporalio" / "temporal.toml").write_text(
        '[profile.default]\naddress = "home"\n'
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert _profile(ours)["address"] == "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert _profile(ours)["address"] == "home"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert _profile(ours)["address"] == "home"
    # An empty TEMPORAL_CONFIG_FILE falls back to the default path.
    assert _profile(ours, env_vars={"TEMPORAL_CONFIG_FILE": ""})["address"] == "home"


def test_strict_mode() -> None:
    lenient = b'[profile.default]\naddress = "a"\nunknown = 1\n[other]\nx = 1\n'
    assert _config(ours, data=lenient) == {"default": {"address": "a"}}
    with pytest.raises(ours.ConfigError, match="unknown field `other`, expected `profile`"):
        _config(ours, data=lenient, config_file_strict=True)
    with pytest.raises(
        ours.ConfigError, match="unknown field `unknown`, expected one of `address`"
    ):
        _config(ours, data=b"[profile.default]\nunknown = 1\n", config_file_strict=True)
    with pytest.raises(
        ours.ConfigError, match="unknown field `bad`, expected `endpoint` or `auth`"
    ):
        _profile(ours, data=b"[profile.default.codec]\nbad = 1\n", config_file_strict=True)


def test_type_errors_in_toml() -> None:
    with pytest.raises(
        ours.ConfigError,
        match=r"^Configuration loading error: invalid type: integer `1`, expected a string\n"
        r"in `profile.a.address`\n$",
    ):
        _config(ours, data=b"[profile.a]\naddress = 1\n")
    with pytest.raises(ours.ConfigError, match='invalid type: string "x", expected a boolean'):
        _config(ours, data=b'[profile.a.tls]\ndisabled = "x"\n')


def test_disable_flags(tmp_path: Path) -> None:
    with pytest.raises(ours.ConfigError, match="Cannot disable both file and environment loading"):
        _profile(ours, disable_file=True, disable_env=True)
    env = {"TEMPORAL_ADDRESS": "env", "TEMPORAL_PROFILE": "prod"}
    # disable_file ignores given data.
    assert _profile(ours, data=FULL_TOML.encode(), disable_file=True, env_vars=env) == {
        "address": "env"
    }
    # disable_env ignores overrides and TEMPORAL_PROFILE ...
    assert _profile(ours, data=FULL_TOML.encode(), disable_env=True, env_vars=env) == {
        "address": "localhost:7233",
        "namespace": "default-ns",
    }
    # ... but still finds the file through TEMPORAL_CONFIG_FILE.
    file = tmp_path / "c.toml"
    file.write_text(FULL_TOML)
    found = _profile(ours, disable_env=True, env_vars={"TEMPORAL_CONFIG_FILE": str(file)})
    assert found["address"] == "localhost:7233"


def test_source_arguments() -> None:
    with pytest.raises(ours.ConfigError, match="^Cannot specify both path and data"):
        _config(ours, path="/x", data=b"")
    with pytest.raises(TypeError):
        _config(ours, path=Path("/x"))
    with pytest.raises(TypeError):
        _config(ours, data="text")
    with pytest.raises(TypeError):
        _config(ours, config_file_strict=1)
    with pytest.raises(TypeError):
        _config(ours, env_vars=os.environ)
    assert _config(ours, data=bytearray(b'profile.a.address = "x"')) == {"a": {"address": "x"}}


def test_blank_and_bom_documents() -> None:
    for data in (b"", b"  \n\t\x0b", b"# only a comment\n", "\ufeff".encode()):
        assert _config(ours, data=data) == {}
    assert _config(ours, data='\ufeffprofile.a.address = "x"'.encode()) == {"a": {"address": "x"}}


def test_invalid_utf8() -> None:
    with pytest.raises(
        ours.ConfigError,
        match="^Configuration loading error: invalid utf-8 sequence of 1 bytes from index 0$",
    ):
        _config(ours, data=b"\xff")
    with pytest.raises(ours.ConfigError, match="incomplete utf-8 byte sequence from index 2"):
        _config(ours, data=b"ab\xe2\x82")


def test_toml_syntax_error() -> None:
    with pytest.raises(
        ours.ConfigError,
        match=r"^Configuration loading error: TOML parse error at line 1, column 11\n",
    ):
        _config(ours, data=b"[profile.a\n")


def test_system_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(FULL_TOML)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(file))
    monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "sys-ns")
    monkeypatch.setenv("TEMPORAL_GRPC_META_FROM_SYS", "1")
    profile = _profile(ours, env_vars=None)
    assert profile["namespace"] == "sys-ns"
    assert profile["address"] == "prod.example:7233"
    assert profile["grpc_meta"]["from-sys"] == "1"


def test_wrapper_integration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """temporalio.envconfig's Python layer accepts the replacement's dicts."""
    try:
        import temporalio.envconfig as wrapper
        import temporalio.service
    except ImportError:
        pytest.skip("temporalio.envconfig cannot be imported")
    monkeypatch.setattr(wrapper, "_bridge_envconfig", ours)
    cert = tmp_path / "client.pem"
    cert.write_bytes(b"CERT")
    prof = wrapper.ClientConfigProfile.load(
        "prod",
        config_source=FULL_TOML,
        override_env_vars={
            "TEMPORAL_TLS_SERVER_CA_CERT_DATA": "CA",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(cert),
        },
    )
    assert prof.tls is not None
    assert prof.tls.client_private_key == b"KEYDATA"
    assert prof.tls.client_cert == cert
    connect = prof.to_client_connect_config()
    assert connect["target_host"] == "prod.example:7233"
    assert connect["api_key"] == "prod-key"
    tls = connect["tls"]
    assert isinstance(tls, temporalio.service.TLSConfig)
    assert tls.domain == "prod.example"
    assert tls.server_root_ca_cert == b"CA"
    assert tls.client_cert == b"CERT"
    assert tls.client_private_key == b"KEYDATA"
    assert connect["rpc_metadata"] == {"custom-header": "v1", "other-header": "v2"}
    all_profiles = wrapper.ClientConfig.load(config_source=FULL_TOML, override_env_vars={})
    assert set(all_profiles.profiles) == {"default", "prod"}


# ---------------------------------------------------------------------------
# Comparison with the native module
# ---------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    kind: str  # "config" or "profile"
    kwargs: dict[str, Any] = field(default_factory=dict)
    file: str | None = None  # written to tmp; "{file}" in kwargs/env is replaced
    syntax_error: bool = False  # only the error category can be compared


def _syntax(case_id: str, data: bytes) -> Case:
    return Case(case_id, "config", {"data": data}, syntax_error=True)


CASES: list[Case] = [
    # Whole-file loading
    Case("config-data", "config", {"data": FULL_TOML.encode()}),
    Case("config-path", "config", {"path": "{file}"}, file=FULL_TOML),
    Case("config-missing-path", "config", {"path": "/nonexistent/temporal.toml"}),
    Case("config-env-file", "config", {"env_vars": {"TEMPORAL_CONFIG_FILE": "{file}"}}, FULL_TOML),
    Case(
        "config-env-file-missing",
        "config",
        {"env_vars": {"TEMPORAL_CONFIG_FILE": "/nonexistent/x.toml"}},
    ),
    Case("config-path-and-data", "config", {"path": "/x", "data": b""}),
    Case("config-empty", "config", {"data": b""}),
    Case("config-blank", "config", {"data": b" \n\t\x0b\r\n"}),
    Case("config-comment", "config", {"data": b"# hi\n"}),
    Case("config-bom", "config", {"data": '\ufeffprofile.a.address="x"'.encode()}),
    Case("config-empty-tls", "config", {"data": b"[profile.a]\n[profile.a.tls]\n"}),
    Case("config-empty-profile-table", "config", {"data": b"profile = {}\n"}),
    Case(
        "config-empty-cert-data",
        "config",
        {"data": b'[profile.a.tls]\nserver_ca_cert_data = ""\nclient_key_path = ""\n'},
    ),
    Case(
        "config-cert-conflict",
        "config",
        {"data": b'[profile.a.tls]\nclient_key_path = "p"\nclient_key_data = ""\n'},
    ),
    Case(
        "config-ca-conflict",
        "config",
        {"data": b'[profile.a.tls]\nserver_ca_cert_path = "p"\nserver_ca_cert_data = "d"\n'},
    ),
    Case(
        "config-grpc-meta-normalized",
        "config",
        {"data": b'[profile.a.grpc_meta]\nSOME_Key = "1"\n"x-y" = "2"\n'},
    ),
    Case(
        "config-tls-flags",
        "config",
        {"data": b"[profile.a.tls]\ndisabled = false\ndisable_host_verification = true\n"},
    ),
    Case("config-lenient-unknown", "config", {"data": b"a = 1\n[profile.a]\nfoo = [1]\n"}),
    # Strict mode
    Case(
        "strict-top",
        "config",
        {"data": b'[bar]\nfoo = 1\n[profile.a]\naddress = "x"\n', "config_file_strict": True},
    ),
    Case(
        "strict-profile",
        "config",
        {"data": b"[profile.a]\nfoo = 1\n", "config_file_strict": True},
    ),
    Case(
        "strict-tls",
        "config",
        {"data": b"[profile.a.tls]\nfoo = 1\n", "config_file_strict": True},
    ),
    Case(
        "strict-codec",
        "config",
        {"data": b"[profile.a.codec]\nfoo = 1\n", "config_file_strict": True},
    ),
    Case(
        "strict-valid",
        "config",
        {"data": FULL_TOML.encode(), "config_file_strict": True},
    ),
    Case(
        "strict-order",
        "config",
        {"data": b"foo = 1\nprofile.a.address = 1\n", "config_file_strict": True},
    ),
    Case(
        "strict-profile-load",
        "profile",
        {"data": b"[profile.default]\nnope = 1\n", "config_file_strict": True},
    ),
    # serde-style type errors
    Case("type-int", "config", {"data": b"[profile.a]\naddress = -7\n"}),
    Case("type-float", "config", {"data": b"[profile.a]\naddress = 1.5\n"}),
    Case("type-float-big", "config", {"data": b"[profile.a]\naddress = 1e100\n"}),
    Case("type-float-small", "config", {"data": b"[profile.a]\naddress = 1e-7\n"}),
    Case("type-float-int", "config", {"data": b"[profile.a]\naddress = 3e0\n"}),
    Case("type-float-negzero", "config", {"data": b"[profile.a]\naddress = -0.0\n"}),
    Case("type-float-nan", "config", {"data": b"[profile.a]\naddress = nan\n"}),
    Case("type-float-inf", "config", {"data": b"[profile.a]\naddress = -inf\n"}),
    Case("type-bool", "config", {"data": b"[profile.a]\nnamespace = true\n"}),
    Case("type-array", "config", {"data": b"[profile.a]\napi_key = [1]\n"}),
    Case("type-table", "config", {"data": b"[profile.a]\naddress = {x = 1}\n"}),
    Case("type-datetime", "config", {"data": b"[profile.a]\naddress = 1979-05-27T07:32:00Z\n"}),
    Case("type-date", "config", {"data": b"[profile.a]\naddress = 1979-05-27\n"}),
    Case("type-bool-field", "config", {"data": b'[profile.a.tls]\ndisabled = "x"\n'}),
    Case(
        "type-bool-field-2",
        "config",
        {"data": b"[profile.a.tls]\ndisable_host_verification = 1\n"},
    ),
    Case("type-codec", "config", {"data": b"[profile.a.codec]\nauth = false\n"}),
    Case("type-meta-value", "config", {"data": b"[profile.a.grpc_meta]\nx = 1\n"}),
    Case("type-meta-table", "config", {"data": b"[profile.a]\ngrpc_meta = [1]\n"}),
    Case("type-profile-map", "config", {"data": b'profile = "x"\n'}),
    Case("type-profile-seq", "config", {"data": b"[[profile]]\na = 1\n"}),
    Case("type-profile-struct", "config", {"data": b"[profile]\na = 1\n"}),
    Case("type-tls-struct", "config", {"data": b"profile.a.tls = 1\n"}),
    Case(
        "type-tls-struct-strict",
        "config",
        {"data": b"profile.a.tls = 1\n", "config_file_strict": True},
    ),
    Case("type-codec-struct", "config", {"data": b'profile.a.codec = "c"\n'}),
    Case(
        "type-string-escapes",
        "config",
        {"data": 'profile = "a\\"b\\\\c\\n\\t\\u0000\\u0301\u00e9\u00a0\\u007f"\n'.encode()},
    ),
    Case(
        "type-first-in-key-order",
        "config",
        {"data": b"profile.b.address = 1\nprofile.a.address = 2\n"},
    ),
    Case(
        "type-lenient-skips-unknown",
        "config",
        {"data": b"profile.a.foo = 1\nprofile.a.address = 1\n"},
    ),
    Case("type-big-int", "config", {"data": b"profile.a.address = 9223372036854775807\n"}),
    # Structs given as arrays (serde visits their fields positionally)
    Case("seq-tls-lenient", "config", {"data": b'profile.a.tls = [true, "p"]\n'}),
    Case(
        "seq-tls-strict",
        "config",
        {"data": b'profile.a.tls = [true, "p"]\n', "config_file_strict": True},
    ),
    Case("seq-profile-empty", "config", {"data": b"profile.a = []\n"}),
    Case(
        "seq-profile-empty-strict",
        "config",
        {"data": b"profile.a = []\n", "config_file_strict": True},
    ),
    Case("seq-codec-extra", "config", {"data": b'profile.a.codec = ["e", "a", "x"]\n'}),
    Case("seq-tls-bad-element", "config", {"data": b"profile.a.tls = [1]\n"}),
    Case("datetime-in-meta", "config", {"data": b"profile.a.grpc_meta = 1979-05-27\n"}),
    Case("datetime-as-tls", "config", {"data": b"profile.a.tls = 1979-05-27\n"}),
    Case(
        "datetime-as-tls-strict",
        "config",
        {"data": b"profile.a.tls = 1979-05-27\n", "config_file_strict": True},
    ),
    # Encoding
    Case("utf8-invalid", "config", {"data": b"\xff"}),
    Case("utf8-invalid-mid", "config", {"data": b"ab\xe2\x82x"}),
    Case("utf8-incomplete", "config", {"data": b"ab\xf0\x9f\x98"}),
    Case("utf8-overlong", "config", {"data": b"\xc0\xaf"}),
    Case("utf8-surrogate", "config", {"data": b"\xed\xa0\x80"}),
    # Syntax errors: only the category can match
    _syntax("syntax-unclosed", b"[profile.a\n"),
    _syntax("syntax-duplicate", b'[profile.a]\naddress = "x"\n[profile.a]\n'),
    _syntax("syntax-bad-escape", b'profile.a.address = "\\ud800"\n'),
    _syntax("syntax-lone-cr", b'profile.a.address = "x"\r'),
    _syntax("syntax-control", b"\x1c"),
    _syntax("syntax-unicode-bare-key", 'profile.caf\u00e9.address = "x"\n'.encode()),
    # Profile selection
    Case("profile-default", "profile", {"data": FULL_TOML.encode()}),
    Case("profile-named", "profile", {"profile": "prod", "data": FULL_TOML.encode()}),
    Case(
        "profile-env",
        "profile",
        {"data": FULL_TOML.encode(), "env_vars": {"TEMPORAL_PROFILE": "prod"}},
    ),
    Case(
        "profile-arg-beats-env",
        "profile",
        {
            "profile": "default",
            "data": FULL_TOML.encode(),
            "env_vars": {"TEMPORAL_PROFILE": "prod"},
        },
    ),
    Case("profile-missing-named", "profile", {"profile": "nope", "data": FULL_TOML.encode()}),
    Case("profile-missing-empty-name", "profile", {"profile": "", "data": FULL_TOML.encode()}),
    Case(
        "profile-missing-env",
        "profile",
        {"data": FULL_TOML.encode(), "env_vars": {"TEMPORAL_PROFILE": "nope"}},
    ),
    Case(
        "profile-empty-env",
        "profile",
        {"data": FULL_TOML.encode(), "env_vars": {"TEMPORAL_PROFILE": ""}},
    ),
    Case("profile-missing-default", "profile", {"data": b'[profile.x]\naddress = "y"\n'}),
    Case("profile-missing-file", "profile", {"path": "/nonexistent/t.toml"}),
    Case("profile-missing-file-named", "profile", {"profile": "p", "path": "/nonexistent/t.toml"}),
    Case("profile-path", "profile", {"profile": "prod", "path": "{file}"}, file=FULL_TOML),
    Case(
        "profile-env-file",
        "profile",
        {"env_vars": {"TEMPORAL_CONFIG_FILE": "{file}", "TEMPORAL_PROFILE": "prod"}},
        file=FULL_TOML,
    ),
    # Env overrides
    Case(
        "env-basic",
        "profile",
        {
            "data": FULL_TOML.encode(),
            "env_vars": {
                "TEMPORAL_ADDRESS": "e:1",
                "TEMPORAL_NAMESPACE": "",
                "TEMPORAL_API_KEY": "k",
                "UNRELATED": "x",
            },
        },
    ),
    *[
        Case(
            f"env-tls-{value}",
            "profile",
            {"disable_file": True, "env_vars": {"TEMPORAL_TLS": value}},
        )
        for value in ("true", "false", "1", "0", "TRUE", "False", "yes", "")
    ],
    Case(
        "env-tls-over-file",
        "profile",
        {
            "profile": "prod",
            "data": FULL_TOML.encode(),
            "env_vars": {
                "TEMPORAL_TLS": "true",
                "TEMPORAL_TLS_SERVER_NAME": "sni",
                "TEMPORAL_TLS_CLIENT_CERT_PATH": "/other.pem",
                "TEMPORAL_TLS_CLIENT_KEY_DATA": "NEWKEY",
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/ca.pem",
                "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION": "1",
            },
        },
    ),
    Case(
        "env-tls-bad-bool-keeps-file",
        "profile",
        {
            "data": b"[profile.default.tls]\ndisabled = true\ndisable_host_verification = true\n",
            "env_vars": {"TEMPORAL_TLS": "nah", "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION": "x"},
        },
    ),
    Case(
        "env-tls-empty-data",
        "profile",
        {"disable_file": True, "env_vars": {"TEMPORAL_TLS_CLIENT_CERT_DATA": ""}},
    ),
    Case(
        "env-tls-both",
        "profile",
        {
            "disable_file": True,
            "env_vars": {
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "p",
                "TEMPORAL_TLS_SERVER_CA_CERT_DATA": "d",
            },
        },
    ),
    Case(
        "env-tls-data-over-file-path",
        "profile",
        {
            "profile": "prod",
            "data": FULL_TOML.encode(),
            "env_vars": {"TEMPORAL_TLS_CLIENT_CERT_DATA": "d"},
        },
    ),
    Case(
        "env-tls-path-over-file-data",
        "profile",
        {
            "profile": "prod",
            "data": FULL_TOML.encode(),
            "env_vars": {"TEMPORAL_TLS_CLIENT_KEY_PATH": "p"},
        },
    ),
    Case(
        "env-ca-data-over-file-path",
        "profile",
        {
            "data": b'[profile.default.tls]\nserver_ca_cert_path = "p"\n',
            "env_vars": {"TEMPORAL_TLS_SERVER_CA_CERT_DATA": "d"},
        },
    ),
    Case(
        "env-grpc-meta",
        "profile",
        {
            "profile": "prod",
            "data": FULL_TOML.encode(),
            "env_vars": {
                "TEMPORAL_GRPC_META_CUSTOM_HEADER": "new",
                "TEMPORAL_GRPC_META_OTHER_HEADER": "",
                "TEMPORAL_GRPC_META_Mixed_Case": "m",
                "TEMPORAL_GRPC_META_": "empty-name",
                "TEMPORAL_GRPC_META_ABSENT": "",
            },
        },
    ),
    Case(
        "env-codec-new",
        "profile",
        {"disable_file": True, "env_vars": {"TEMPORAL_CODEC_AUTH": "a"}},
    ),
    Case(
        "env-codec-over-file",
        "profile",
        {
            "profile": "prod",
            "data": FULL_TOML.encode(),
            "env_vars": {"TEMPORAL_CODEC_ENDPOINT": "http://new"},
        },
    ),
    Case(
        "env-api-key-no-tls",
        "profile",
        {"disable_file": True, "env_vars": {"TEMPORAL_API_KEY": "k"}},
    ),
    # disable_file / disable_env
    Case("disable-both", "profile", {"disable_file": True, "disable_env": True}),
    Case(
        "disable-file",
        "profile",
        {
            "data": FULL_TOML.encode(),
            "disable_file": True,
            "env_vars": {"TEMPORAL_ADDRESS": "a", "TEMPORAL_PROFILE": "nope"},
        },
    ),
    Case(
        "disable-env",
        "profile",
        {
            "data": FULL_TOML.encode(),
            "disable_env": True,
            "env_vars": {"TEMPORAL_ADDRESS": "a", "TEMPORAL_PROFILE": "nope"},
        },
    ),
    Case(
        "disable-env-still-finds-file",
        "profile",
        {"disable_env": True, "env_vars": {"TEMPORAL_CONFIG_FILE": "{file}"}},
        file=FULL_TOML,
    ),
    Case(
        "disable-file-path-and-data", "profile", {"disable_file": True, "path": "/x", "data": b""}
    ),
    # Argument conversion
    Case("arg-path-object", "config", {"path": Path("/x")}),
    Case("arg-data-str", "config", {"data": "profile.a.address = 'x'"}),
    Case("arg-data-bytearray", "config", {"data": bytearray(b"profile.a.address = 'x'")}),
    Case("arg-data-list", "config", {"data": list(b"profile.a.address = 'x'")}),
    Case("arg-data-int", "config", {"data": 5}),
    Case("arg-strict-int", "config", {"config_file_strict": 1}),
    Case("arg-strict-none", "config", {"config_file_strict": None}),
    Case("arg-env-not-dict", "config", {"env_vars": [("a", "b")]}),
    Case("arg-env-value-int", "config", {"env_vars": {"TEMPORAL_CONFIG_FILE": 1}}),
    Case("arg-env-key-int", "config", {"env_vars": {1: "x"}}),
    Case("arg-profile-int", "profile", {"profile": 3}),
    Case("arg-profile-surrogate", "profile", {"profile": "\ud800"}),
    Case("arg-disable-env-str", "profile", {"disable_env": "yes"}),
]


def _fill(value: Any, file: str) -> Any:
    if isinstance(value, str):
        return value.replace("{file}", file)
    if isinstance(value, dict):
        return {_fill(k, file): _fill(v, file) for k, v in value.items()}
    return value


def _run(mod: Any, case: Case, kwargs: dict[str, Any]) -> tuple[str, Any]:
    call: Callable[..., Any] = _config if case.kind == "config" else _profile
    try:
        return ("ok", call(mod, **kwargs))
    except Exception as err:
        return (type(err).__name__, str(err))


_NATIVE_LOCATION_RE = re.compile(r"^TOML parse error at line \d+, column \d+\n")


def _comparable_error(message: str) -> str:
    """Reduce a ConfigError message to what both implementations share.

    The native loader prints a source snippet for TOML errors; the replacement
    names the key path instead. Both carry the same serde message line."""
    prefix = "Configuration loading error: "
    if not message.startswith(prefix):
        return message
    detail = message[len(prefix) :]
    if _NATIVE_LOCATION_RE.match(detail):
        lines = [line for line in detail.split("\n") if line]
        return prefix + lines[-1]
    return prefix + detail.split("\n")[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_native(case: Case, native: Any, tmp_path: Path) -> None:
    file = tmp_path / "temporal.toml"
    if case.file is not None:
        file.write_text(case.file)
    kwargs = _fill(case.kwargs, str(file))
    expected = _run(native, case, kwargs)
    actual = _run(ours, case, kwargs)
    assert actual[0] == expected[0], (expected, actual)
    if expected[0] == "ok":
        assert actual[1] == expected[1]
    elif expected[0] == "ConfigError":
        if case.syntax_error:
            prefix = "Configuration loading error: TOML parse error"
            assert expected[1].startswith(prefix)
            assert actual[1].startswith(prefix)
        else:
            assert _comparable_error(actual[1]) == _comparable_error(expected[1])
    else:
        assert actual[1] == expected[1]


def test_matches_native_directory_path(native: Any, tmp_path: Path) -> None:
    expected = _run(native, Case("dir", "config"), {"path": str(tmp_path)})
    actual = _run(ours, Case("dir", "config"), {"path": str(tmp_path)})
    assert actual == expected


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("checks the XDG layout")
    home = tmp_path / "home"
    (home / ".config" / "temporalio").mkdir(parents=True)
    (home / ".config" / "temporalio" / "temporal.toml").write_text(FULL_TOML)
    xdg = tmp_path / "xdg"
    (xdg / "temporalio").mkdir(parents=True)
    (xdg / "temporalio" / "temporal.toml").write_text('[profile.default]\naddress = "xdg"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    yield tmp_path


@pytest.mark.parametrize("xdg", ["unset", "absolute", "relative", "empty"])
def test_matches_native_default_path(
    native: Any, config_home: Path, monkeypatch: pytest.MonkeyPatch, xdg: str
) -> None:
    if xdg == "absolute":
        monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home / "xdg"))
    elif xdg == "relative":
        monkeypatch.setenv("XDG_CONFIG_HOME", "xdg")
    elif xdg == "empty":
        monkeypatch.setenv("XDG_CONFIG_HOME", "")
    for env in ({}, {"TEMPORAL_CONFIG_FILE": ""}, None):
        assert _config(ours, env_vars=env) == _config(native, env_vars=env)
        assert _profile(ours, env_vars=env) == _profile(native, env_vars=env)


def test_matches_native_system_env(
    native: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "c.toml"
    file.write_text(FULL_TOML)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(file))
    monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "sys:1")
    monkeypatch.setenv("TEMPORAL_TLS", "0")
    monkeypatch.setenv("TEMPORAL_CODEC_AUTH", "sys-auth")
    monkeypatch.setenv("TEMPORAL_GRPC_META_SYS_HEADER", "s")
    monkeypatch.setenv("TEMPORAL_GRPC_META_OTHER_HEADER", "")
    for kwargs in ({}, {"disable_env": True}, {"disable_file": True}, {"profile": "default"}):
        assert _profile(ours, env_vars=None, **kwargs) == _profile(native, env_vars=None, **kwargs)
    assert _config(ours, env_vars=None) == _config(native, env_vars=None)


def _toml11_supported() -> bool:
    try:
        _config(ours, data=b'profile = { a = { address = "x",\n}, }\n')
    except ours.ConfigError:
        return False
    return True


@pytest.mark.parametrize(
    "data",
    [
        b'profile = { a = { address = "x",\n namespace = "y" } }\n',
        b"profile.a.tls = { disabled = true, }\n",
        b'profile.a.address = "\\e\\x41"\n',
        b"profile.a.address = 07:32\n",
    ],
)
def test_matches_native_toml_1_1(native: Any, data: bytes) -> None:
    """The native parser reads TOML 1.1; so does the replacement when its TOML
    parser does (tomli >= 2.4, or a future tomllib)."""
    if not _toml11_supported():
        pytest.skip("the available TOML parser only reads TOML 1.0")
    case = Case("toml-1.1", "config", {"data": data})
    expected = _run(native, case, case.kwargs)
    actual = _run(ours, case, case.kwargs)
    assert actual[0] == expected[0]
    if expected[0] == "ok":
        assert actual[1] == expected[1]
    else:
        assert _comparable_error(actual[1]) == _comparable_error(expected[1])


def test_matches_native_non_unicode_env(native: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform == "win32":
        pytest.skip("POSIX environments only")
    # os.environ holds undecodable bytes as lone surrogates (surrogateescape).
    monkeypatch.setenv("TEMPORAL_ADDRESS", "a\udcfe\n")
    expected = _run(native, Case("env", "profile"), {"disable_file": True, "env_vars": None})
    actual = _run(ours, Case("env", "profile"), {"disable_file": True, "env_vars": None})
    assert expected[0] == "ConfigError"
    assert actual == expected

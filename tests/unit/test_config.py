"""Tests for server.config: the TOML schema and the documented default file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server import config as cfg
from server.config import (AuthConfig, C2SConfig, Config, ConfigError, HostConfig,
                           ServerConfig, load, parse)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FILE = REPO / "conf" / "xferd.toml"


def write(tmp_path: Path, text: str, name: str = "xferd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value), path


def builtin_seen_from(directory: Path) -> Config:
    """The built-in defaults as a config file in *directory* means them: its
    relative paths (and the default ``data_dir``) are taken from there."""
    config = Config()
    config.server.data_dir = str(directory / "data")
    return config


# -- the documented default file ---------------------------------------------------

def test_default_file_exists():
    assert DEFAULT_FILE.is_file()


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(Config)
                                     if f.name != "source"])
def test_default_file_equals_builtin_defaults(section):
    """… but for data_dir, relative to the working directory in the code (data/ in
    the repository root) and to conf/ in the file (../data: the same data/)."""
    from_file = load(DEFAULT_FILE)
    assert getattr(from_file, section) == getattr(builtin_seen_from(REPO), section)


def test_default_file_equals_builtin_defaults_field_by_field():
    from_file, builtin = load(DEFAULT_FILE), builtin_seen_from(REPO)
    for section in ("server", "storage", "c2s", "s2s", "auth"):
        a, b = getattr(from_file, section), getattr(builtin, section)
        for f in dataclasses.fields(b):
            got, want = getattr(a, f.name), getattr(b, f.name)
            assert got == want, f"{section}.{f.name}: file has {got!r}, code has {want!r}"
            assert type(got) is type(want), f"{section}.{f.name}: type differs"
    assert list(from_file.hosts) == list(builtin.hosts)
    for domain, host in builtin.hosts.items():
        for f in dataclasses.fields(host):
            assert getattr(from_file.hosts[domain], f.name) == getattr(host, f.name), \
                f"hosts.{domain}.{f.name}"


def test_default_file_documents_every_key():
    """Every schema key appears in conf/xferd.toml (the file is the documentation)."""
    text = DEFAULT_FILE.read_text(encoding="utf-8")
    for section, cls in (("server", cfg.ServerConfig), ("storage", cfg.StorageConfig),
                         ("c2s", cfg.C2SConfig), ("s2s", cfg.S2SConfig),
                         ("auth", cfg.AuthConfig), ("im", cfg.IMConfig),
                         ("moved", cfg.MovedConfig), ("accountxfer", cfg.AccountXferConfig),
                         ("mam", cfg.MamConfig)):
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            if f.name == "routes":                    # a table of its own
                assert "[s2s.routes]" in text, "s2s.routes not documented"
                continue
            assert any(line.split("=")[0].strip() == f.name
                       for line in text.splitlines()), f"{section}.{f.name} not documented"
    for f in dataclasses.fields(HostConfig):
        assert f.name in text, f"hosts.*.{f.name} not documented"


def test_load_records_the_source():
    assert load(DEFAULT_FILE).source == str(DEFAULT_FILE)
    assert Config().source == "<built-in defaults>"


def test_load_none_gives_builtin_defaults():
    assert load(None) == Config()


def test_empty_file_gives_builtin_defaults(tmp_path):
    path = write(tmp_path, "")
    assert dataclasses.replace(load(path), source=Config().source) == builtin_seen_from(tmp_path)


def test_relative_paths_are_taken_from_the_files_directory(tmp_path, monkeypatch):
    """Whatever directory a command runs in, one config names one database."""
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", '[server]\ndata_dir = "../var"\n[s2s]\nca_file = "ca.pem"\n'
                                   '[hosts.localhost]\ncert = "c.crt"\nkey = "/abs/c.key"\n')
    monkeypatch.chdir(tmp_path / "etc")
    config = load("xferd.toml")
    assert config.storage_path == tmp_path / "var" / "xferd.sqlite"
    assert config.s2s.ca_file == str(tmp_path / "etc" / "ca.pem")
    host = config.hosts["localhost"]
    assert (host.cert, host.key) == (str(tmp_path / "etc" / "c.crt"), "/abs/c.key")


def test_partial_section_keeps_other_defaults(tmp_path):
    config = load(write(tmp_path, "[c2s]\nport = 0\n"))
    assert config.c2s.port == 0
    assert config.c2s.direct_tls_port == 5223
    assert config.c2s.interfaces == ["127.0.0.1"]
    assert config.auth == AuthConfig()


def test_hosts_replace_the_default_host_and_are_normalised(tmp_path):
    config = load(write(tmp_path, '[hosts."Example.COM"]\nregistration = false\n'
                                  '[hosts."b.example"]\n'))
    assert list(config.hosts) == ["example.com", "b.example"]
    assert config.hosts["example.com"].registration is False
    assert config.hosts["b.example"] == HostConfig()


def test_derived_paths(tmp_path):
    config = load(write(tmp_path, '[server]\ndata_dir = "/var/lib/x"\n'
                                  '[storage]\npath = "db.sqlite"\n'))
    assert config.storage_path == Path("/var/lib/x/db.sqlite")
    assert config.certs_dir == Path("/var/lib/x/certs")


# -- errors name the key and the file ------------------------------------------------

def test_unknown_top_level_table(tmp_path):
    message, path = load_error(tmp_path, "[serverr]\nlog_level = 'info'\n")
    assert str(path) in message
    assert "serverr" in message
    assert "did you mean 'server'" in message


def test_unknown_top_level_table_without_close_match(tmp_path):
    message, path = load_error(tmp_path, "[zzzzzz]\n")
    assert str(path) in message and "zzzzzz" in message
    assert "did you mean" not in message


def test_top_level_key_that_is_not_a_table(tmp_path):
    message, path = load_error(tmp_path, "c2s = 5222\n")
    assert str(path) in message and "[c2s]" in message and "table" in message


def test_unknown_key_with_close_match(tmp_path):
    message, path = load_error(tmp_path, "[c2s]\nprot = 5222\n")
    assert str(path) in message
    assert "c2s.prot" in message
    assert "did you mean 'port'" in message


def test_unknown_key_in_a_host(tmp_path):
    message, path = load_error(tmp_path, '[hosts."example.com"]\nregistraton = true\n')
    assert str(path) in message
    assert "registraton" in message and "example.com" in message
    assert "did you mean 'registration'" in message


@pytest.mark.parametrize("section,key,value,expect", [
    ("c2s", "port", '"abc"', "an integer"),
    ("c2s", "require_encryption", '"yes"', "true or false"),
    ("c2s", "interfaces", '"127.0.0.1"', "a list of str"),
    ("c2s", "interfaces", '["127.0.0.1", 5]', "a list of str"),
    ("c2s", "port", "true", "an integer"),             # bool is not an int
    ("c2s", "max_depth", "false", "an integer"),
    ("c2s", "port", "5222.0", "an integer"),
    ("c2s", "auth_timeout", '"60"', "a number"),
    ("c2s", "auth_timeout", "true", "a number"),       # bool is not a number either
    ("server", "trace", "1", "true or false"),
    ("server", "data_dir", "5", "a string"),
    ("auth", "max_failures", '"5"', "an integer"),
    ("hosts.\"example.com\"", "registration", '"yes"', "true or false"),
])
def test_wrong_type_names_the_key(tmp_path, section, key, value, expect):
    message, path = load_error(tmp_path, f"[{section}]\n{key} = {value}\n")
    assert str(path) in message
    assert f"{section.replace(chr(34), chr(39))}.{key}" in message
    assert expect in message


@pytest.mark.parametrize("key,value", [("port", 65536), ("port", -1),
                                       ("direct_tls_port", 70000)])
def test_out_of_range_port(tmp_path, key, value):
    message, path = load_error(tmp_path, f"[c2s]\n{key} = {value}\n")
    assert str(path) in message and f"c2s.{key}" in message and str(value) in message


def test_s2s_port_is_range_checked(tmp_path):
    message, path = load_error(tmp_path, "[s2s]\nport = 100000\n")
    assert str(path) in message and "s2s.port" in message


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_range_edges_are_accepted(tmp_path, port):
    assert load(write(tmp_path, f"[c2s]\nport = {port}\n")).c2s.port == port


@pytest.mark.parametrize("section,key,value", [("server", "log_level", "verbose"),
                                               ("server", "log_level", "INFO"),
                                               ("storage", "synchronous", "off")])
def test_bad_choice(tmp_path, section, key, value):
    message, path = load_error(tmp_path, f'[{section}]\n{key} = "{value}"\n')
    assert str(path) in message and f"{section}.{key}" in message and value in message


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_every_log_level_choice_is_accepted(tmp_path, level):
    assert load(write(tmp_path, f'[server]\nlog_level = "{level}"\n')).server.log_level == level


@pytest.mark.parametrize("domain", ["exa mple.com", "a@b.example", "-bad-.example",
                                    "example..com"])
def test_invalid_domain_in_hosts(tmp_path, domain):
    message, path = load_error(tmp_path, f'[hosts."{domain}"]\nregistration = true\n')
    assert str(path) in message
    assert "hosts." in message and domain in message
    assert "not a valid domain" in message


def test_empty_hosts_table(tmp_path):
    message, path = load_error(tmp_path, "[hosts]\n")
    assert str(path) in message and "[hosts]" in message


def test_hosts_that_is_not_a_table(tmp_path):
    message, path = load_error(tmp_path, "hosts = 5\n")
    assert str(path) in message and "[hosts]" in message


def test_host_entry_that_is_not_a_table(tmp_path):
    message, path = load_error(tmp_path, '[hosts]\n"example.com" = true\n')
    assert str(path) in message and "example.com" in message


def test_duplicate_domain_after_normalisation_is_an_error(tmp_path):
    message, path = load_error(tmp_path, '[hosts."Example.com"]\nregistration = false\n'
                                         '[hosts."example.com"]\nregistration = true\n')
    assert str(path) in message and "example.com" in message


def test_ints_are_accepted_for_float_keys(tmp_path):
    config = load(write(tmp_path, "[c2s]\nauth_timeout = 30\n[auth]\nfailure_window = 60\n"))
    assert config.c2s.auth_timeout == 30.0 and isinstance(config.c2s.auth_timeout, float)
    assert config.auth.failure_window == 60.0 and isinstance(config.auth.failure_window, float)


def test_floats_are_kept_for_float_keys(tmp_path):
    assert load(write(tmp_path, "[auth]\nfailure_window = 1.5\n")).auth.failure_window == 1.5


def test_parse_uses_the_given_source_name():
    with pytest.raises(ConfigError) as info:
        parse({"c2s": {"prot": 1}}, "site.toml")
    assert str(info.value).startswith("site.toml:")
    assert parse({}, "site.toml").source == "site.toml"


# -- unreadable files ---------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["[c2s\nport = 1\n", "port = \n", "[c2s]\nport = 1\nport = 2\n",
                                  "key = 'unterminated\n"])
def test_invalid_toml(tmp_path, text):
    message, path = load_error(tmp_path, text)
    assert str(path) in message
    assert "TOML" in message


def test_default_config_path_prefers_environment(tmp_path, monkeypatch):
    path = write(tmp_path, "")
    monkeypatch.setenv("XFERD_CONFIG", str(path))
    assert cfg.default_config_path() == path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XFERD_CONFIG", "xferd.toml")        # made absolute
    assert cfg.default_config_path() == path


def test_default_config_path_is_the_checkouts_not_the_working_directorys(tmp_path, monkeypatch):
    monkeypatch.delenv("XFERD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "")
    assert cfg.default_config_path() == DEFAULT_FILE


def test_builtin_default_types_match_schema():
    # the defaults themselves obey the schema the files are checked against
    assert isinstance(C2SConfig().auth_timeout, float)
    assert isinstance(AuthConfig().failure_window, float)
    assert ServerConfig().log_level in ("debug", "info", "warning", "error")


def test_s2s_routes_are_parsed_and_checked(tmp_path):
    config = load(write(tmp_path, '[s2s.routes]\n"B.Localhost" = { host = "127.0.0.2", port = 15269 }\n'))
    route = config.s2s.routes["b.localhost"]
    assert (route.host, route.port, route.tls) == ("127.0.0.2", 15269, "starttls")
    with pytest.raises(ConfigError, match="tls must be one of"):
        load(write(tmp_path, '[s2s.routes]\n"b.test" = { tls = "maybe" }\n'))
    with pytest.raises(ConfigError, match="require_encryption"):
        load(write(tmp_path, '[s2s.routes]\n"b.test" = { tls = "none" }\n'))
    with pytest.raises(ConfigError, match="unknown key s2s.routes.'b.test'.hots"):
        load(write(tmp_path, '[s2s.routes]\n"b.test" = { hots = "x" }\n'))
    with pytest.raises(ConfigError, match="nameserver"):
        load(write(tmp_path, '[s2s]\nnameserver = "localhost"\n'))


@pytest.mark.parametrize("section,key,value", [("c2s", "stanza_rate", -1),
                                               ("c2s", "stanza_burst", 0),
                                               ("c2s", "max_connections_per_ip", -5),
                                               ("s2s", "stanza_rate", -0.5),
                                               ("s2s", "stanza_burst", 0),
                                               ("s2s", "max_connections_per_ip", -1)])
def test_negative_limits_are_refused(tmp_path, section, key, value):
    message, path = load_error(tmp_path, f"[{section}]\n{key} = {value}\n")
    assert str(path) in message and f"{section}.{key}" in message and str(value) in message


def test_zero_switches_a_limit_off(tmp_path):
    config = load(write(tmp_path, "[c2s]\nstanza_rate = 0\nmax_connections_per_ip = 0\n"
                                  "[s2s]\nstanza_rate = 0\nmax_connections_per_ip = 0\n"))
    assert config.c2s.stanza_rate == 0.0 and config.c2s.max_connections_per_ip == 0
    assert config.s2s.stanza_rate == 0.0 and config.s2s.max_connections_per_ip == 0


def test_default_limits_leave_room_for_a_normal_client():
    # a login and roster sync fit in the burst; a stream carrying a whole domain gets more
    c2s, s2s = C2SConfig(), cfg.S2SConfig()
    assert c2s.stanza_burst >= 100 and c2s.stanza_rate >= 10
    assert s2s.stanza_rate > c2s.stanza_rate and s2s.stanza_burst > c2s.stanza_burst
    assert c2s.max_connections_per_ip >= 10 and s2s.max_connections_per_ip >= 10

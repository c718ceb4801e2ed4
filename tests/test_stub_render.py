"""The stub's inputs and rendered files: validation (exit 2), templates, compose file, parsers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from glcleanup.cli import app
from glcleanup.errors import UsageError
from glcleanup.stub.control import parse_status_lines
from glcleanup.stub.deploy import parse_access_line
from glcleanup.stub.preflight import Listener, conflicts, parse_listeners
from glcleanup.stub.render import build_config, parse_listen, parse_upstream, render_env, render_nginx, stub_file
from glcleanup.stub.verify import Probe, check_answer, curl_argv, parse_curl, probes_for

REPO = Path(__file__).resolve().parent.parent
STUB = REPO / "stub"


def test_bundled_files_are_the_canonical_ones() -> None:
    """A checkout reads the top-level stub/ itself (no symlink, no copy); the wheel maps it (test_dist)."""
    assert not (REPO / "glcleanup" / "stub_files").exists()
    assert not (REPO / "glcleanup" / "stub" / "files").exists()
    for name in ("nginx-respond.conf.in", "nginx-proxy.conf.in", "docker-compose.yml", "stubctl.sh", "README.md"):
        assert stub_file(name) == (STUB / name).read_text()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"listen": "127.0.0.1"}, "--listen"),
    ({"listen": "127.0.0.1:0"}, "port"),
    ({"listen": "localhost:443"}, "--listen"),
    ({"listen": "1.2.3.4:443; evil"}, "--listen"),
    ({"listen": "[::1]:70000"}, "port"),
    ({"dir": "relative/dir"}, "--dir"),
    ({"dir": "/"}, "--dir"),
    ({"dir": "/tmp/a b"}, "--dir"),
    ({"dir": "/tmp/x;y"}, "--dir"),
    ({"dir": "/tmp/$x"}, "--dir"),
    ({"dir": "/tmp/../etc"}, "'..'"),
    ({"cert": "/c.pem"}, "go together"),
    ({"cert": "/c\".pem", "key": "/k.pem"}, "--cert"),
    ({"http_port": "8080"}, "needs --cert"),
    ({"http_port": "80x", "cert": "/c", "key": "/k"}, "--http-port"),
    ({"http_port": "443", "cert": "/c", "key": "/k", "listen": "443"}, "differ"),
    ({"mode": "proxy"}, "--upstream"),
    ({"mode": "proxy", "upstream": "ftp://h"}, "http"),
    ({"mode": "proxy", "upstream": "http://h/path"}, "scheme://host"),
    ({"mode": "proxy", "upstream": "http://u:p@h"}, "scheme://host"),
    ({"mode": "proxy", "upstream": "http://h;x"}, "host"),
    ({"mode": "proxy", "upstream": "http://127.0.0.1:443", "listen": "443"}, "own --listen"),
    ({"upstream": "http://h:5000"}, "only applies"),
    ({"mode": "weird"}, "--mode"),
    ({"deploy": "k8s"}, "--deploy"),
    ({"stop_registry": ""}, "empty"),
    ({"stop_registry": "a 'b"}, "split"),
    ({"start_registry": "a\nb"}, "one line"),
    ({"quiet_minutes": 0}, "positive"),
    ({"image": "nginx; rm"}, "image"),
])
def test_bad_values_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config(**kwargs)  # type: ignore[arg-type]


def test_good_values() -> None:
    config = build_config(mode="proxy", upstream="HTTP://Registry.Example.com:5000/", listen="*:443",
                          cert="/etc/r/c.pem", key="/etc/r/k.pem", http_port="80", dir="/var/tmp/s/",
                          stop_registry="docker stop 'my registry'", start_registry="systemctl start registry",
                          for_duration=timedelta(minutes=30), quiet_minutes=2.5)
    assert config.upstream == "http://registry.example.com:5000"
    assert str(config.listen) == "0.0.0.0:443"
    assert config.dir == "/var/tmp/s"
    assert config.stop_registry == ["docker", "stop", "my registry"]
    assert config.for_seconds == 1800
    assert config.quiet_seconds == 150
    assert parse_listen("[::1]:8443").nginx == "[::1]:8443"
    assert parse_listen("[::]:8443").connect_host == "[::1]"
    assert parse_listen("5000").connect_host == "127.0.0.1"
    assert parse_upstream("https://[::1]:5000") == "https://[::1]:5000"
    # default listen: the port GitLab calls
    assert build_config(registry_url="https://reg.example:5050").listen.port == 5050
    assert build_config(cert="/c", key="/k").listen.port == 443


def test_respond_render_keeps_tls_and_redirect_lines() -> None:
    text = render_nginx(build_config(listen="127.0.0.1:8443", cert="/c.pem", key="/k.pem", http_port="8080",
                                     dir="/srv/stub"))
    assert "listen 127.0.0.1:8443 ssl;" in text
    assert "ssl_certificate     /c.pem;" in text
    assert "listen 127.0.0.1:8080;" in text
    assert "return 308 https://$host:8443$request_uri;" in text
    assert "pid /srv/stub/nginx.pid;" in text
    body = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in body if re.search(r"@[A-Z_]+@", line)]


def test_plain_render_has_no_tls_and_443_has_no_port_suffix() -> None:
    plain = render_nginx(build_config(listen="127.0.0.1:5000", dir="/srv/stub"))
    assert "listen 127.0.0.1:5000;" in plain
    assert "ssl_certificate" not in plain
    assert "return 308" not in plain
    tls = render_nginx(build_config(cert="/c", key="/k", http_port="80", dir="/srv/stub"))
    assert "return 308 https://$host$request_uri;" in tls


def test_proxy_render() -> None:
    text = render_nginx(build_config(mode="proxy", upstream="http://127.0.0.1:5001", listen="127.0.0.1:5000",
                                     dir="/srv/stub"))
    assert text.count("proxy_pass http://127.0.0.1:5001;") == 2
    assert 'if ($request_method = OPTIONS) { return 404 ""; }' in text
    assert "client_max_body_size 0;" in text
    assert "proxy_set_header Host $http_host;" in text


def test_env_file() -> None:
    env = render_env(build_config(dir="/srv/stub", cert="/etc/c.pem", key="/etc/k.pem"))
    assert "STUB_DIR=/srv/stub\n" in env
    assert "STUB_CERT=/etc/c.pem\n" in env
    assert "STUB_IMAGE=nginx:1.26\n" in env
    assert "STUB_KEY=/srv/stub/no-tls.placeholder" in render_env(build_config(dir="/srv/stub"))


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    return None


def _yaml(text: str) -> Any:
    """YAML to data: PyYAML in this venv, else the system python's (docker-compose depends on it)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        system = shutil.which("python3", path="/usr/bin")
        probe = [system, "-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"] \
            if system else None
        if probe is None or subprocess.run([*probe[:2], "import yaml"], capture_output=True, check=False).returncode:
            pytest.skip("no YAML parser (PyYAML) to read the compose file")
        return json.loads(subprocess.run(probe, input=text, capture_output=True, text=True, check=True).stdout)
    return yaml.safe_load(text)


def test_compose_file_is_valid_and_its_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """docker-compose config on the rendered dir, then nginx -t with exactly the paths the container uses."""
    directory = tmp_path / "stub"
    directory.mkdir()
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")], check=True, capture_output=True)
    config = build_config(listen="127.0.0.1:8443", cert=str(tls / "cert.pem"), key=str(tls / "key.pem"),
                          dir=str(directory), http_port="8080")
    (directory / "docker-compose.yml").write_text(stub_file("docker-compose.yml"))
    (directory / ".env").write_text(render_env(config))
    (directory / "nginx.conf").write_text(render_nginx(config))
    cli = _compose_cli()
    if cli is not None:
        out = subprocess.run([*cli, "-p", config.compose_project, "-f", str(directory / "docker-compose.yml"),
                              "config"], capture_output=True, text=True, check=False, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        rendered = _yaml(out.stdout)
    else:  # a schema-shaped check of the same interpolation
        text = (directory / "docker-compose.yml").read_text()
        for line in (directory / ".env").read_text().splitlines():
            name, _, value = line.partition("=")
            text = text.replace("${" + name + "}", value)
        text = text.replace("${STUB_IMAGE:-nginx:1.26}", config.image)
        rendered = _yaml(text)
    service = rendered["services"]["stub"]
    assert service["network_mode"] == "host"
    assert service["image"].startswith("nginx:")
    command = service["command"]
    assert command[:2] == ["nginx", "-p"]
    volumes = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" + (":ro" if v.get("read_only") else "")
               for v in service["volumes"]]
    assert f"{directory}:{directory}" in [v.rsplit(":rw", 1)[0] for v in volumes]
    assert f"{tls / 'cert.pem'}:{tls / 'cert.pem'}:ro" in volumes
    assert f"{tls / 'key.pem'}:{tls / 'key.pem'}:ro" in volumes
    if shutil.which("nginx") is None:
        pytest.skip("nginx missing")
    (directory / "tmp").mkdir()
    # the container's command line, with "-t": same prefix, same config, same certificate paths
    argv = [command[0], "-t", *command[1:command.index("-g")]]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_compose_service_is_what_the_readme_says() -> None:
    text = stub_file("docker-compose.yml")
    assert "network_mode: host" in text
    assert 'restart: "no"' in text
    assert ":ro" in text


def test_listener_parsing_and_conflicts() -> None:
    ss = ("LISTEN 0 128 0.0.0.0:2024 0.0.0.0:*\nLISTEN 0 511 127.0.0.1:5000 0.0.0.0:*\n"
          "LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*\nLISTEN 0 128 [::]:22 [::]:*\nLISTEN 0 128 *:80 *:*\n")
    found = parse_listeners(ss)
    assert Listener("127.0.0.53", 53) in found
    assert Listener("::", 22) in found
    netstat = "Active Internet connections\nProto Recv-Q Send-Q Local Address Foreign Address State\n" \
              "tcp        0      0 127.0.0.1:5000          0.0.0.0:*               LISTEN\n"
    assert parse_listeners(netstat) == [Listener("127.0.0.1", 5000)]
    assert conflicts(Listener("127.0.0.1", 5000), parse_listen("0.0.0.0:5000"))
    assert conflicts(Listener("0.0.0.0", 5000), parse_listen("127.0.0.1:5000"))
    assert conflicts(Listener("::ffff:127.0.0.1", 5000), parse_listen("127.0.0.1:5000"))
    assert not conflicts(Listener("127.0.0.2", 5000), parse_listen("127.0.0.1:5000"))
    assert not conflicts(Listener("127.0.0.1", 5001), parse_listen("127.0.0.1:5000"))
    assert conflicts(Listener("*", 80), parse_listen("10.0.0.1:80"))


def test_curl_output_parsing_and_checks() -> None:
    probes = probes_for(build_config(cert="/c", key="/k", listen="127.0.0.1:8443", http_port="8080"))
    argv = curl_argv("https://127.0.0.1:8443", probes)
    assert argv.count("--next") == len(probes) - 1
    assert "-I" in argv                                    # the HEAD probe
    assert argv[-1] == "http://127.0.0.1:8080/v2/"          # the redirect probe uses the plain port
    mark = "\n<<<glcleanup-verify {}>>>\n"
    output = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0"
              "\r\n\r\n{}" + mark.format(200) + "" + mark.format("000")
              + "HTTP/1.1 404 Not Found\r\n\r\n" + mark.format(404))
    answers = parse_curl(output)
    assert [a.status for a in answers] == [200, 0, 404]
    assert answers[0].header("docker-distribution-api-version") == "registry/2.0"
    assert answers[0].body == "{}"
    get_v2 = Probe("GET", "/v2/", (200,), ("Docker-Distribution-Api-Version", "registry/2.0"), body_json={})
    assert check_answer(get_v2, answers[0]) is None
    assert "no answer" in (check_answer(get_v2, answers[1]) or "")
    assert "want 200" in (check_answer(get_v2, answers[2]) or "")


def test_status_and_access_line_parsing() -> None:
    values, state, which = parse_status_lines(
        "state_file=present\nrunning=yes\nrequests=3\nconfirmed_since=2026-01-01T00:00:00Z\n"
        "last_delete=1.2.3.4 - - [29/Nov/2026:04:58:48 +0000] \"DELETE /v2/a/manifests/latest HTTP/1.1\" 202 0 "
        "\"-\" \"GitLab/17.3.5\"\n---state---\n" + json.dumps({"mode": "respond"}) + "\n")
    assert which == "state"
    assert state == {"mode": "respond"}
    assert values["running"] == "yes"
    last = parse_access_line(values["last_delete"])
    assert last == {"time": "2026-11-29T04:58:48Z", "method": "DELETE", "path": "/v2/a/manifests/latest",
                    "status": 202, "user_agent": "GitLab/17.3.5", "client": "1.2.3.4"}
    assert parse_access_line("garbage") is None


runner = CliRunner()


@pytest.mark.parametrize("args", [
    ["stub", "on", "--registry-host", "local", "--listen", "nope"],
    ["stub", "on", "--registry-host", "local", "--dir", "rel"],
    ["stub", "on", "--registry-host", "local", "--for", "soon"],
    ["stub", "on", "--registry-host", "local", "--mode", "proxy", "--upstream", "http://x/y"],
    ["stub", "on"],                                          # no --registry-host
    ["stub", "on", "--registry-host", "bad host!"],
    ["stub", "off", "--registry-host", "local", "--dir", "/a b"],
    ["stub", "status", "--registry-host", "local", "--dir", "x"],
])
def test_cli_rejects_bad_input_with_exit_2(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, args, env={**os.environ})
    assert result.exit_code == 2, result.output

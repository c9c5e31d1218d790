"""The helper programs of the example templates, on their own: the secrets agent against a
Vault-shaped server written here (loopback), the log collector's truncation and partial
lines, config-sync's refusal of unsafe names, ``controlplane inject`` in file mode."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controlplane.cli.main import main
from controlplane.inject.helpers import logs, sync

REPO = Path(__file__).resolve().parents[3]


class FakeVault:
    """Kubernetes auth (role + jwt -> client token) and KV v2 reads, as Vault answers them."""

    def __init__(self) -> None:
        self.secrets = {"secret/data/payments/db": {"user": "app", "password": "one"}}
        self.logins: list[dict] = []
        vault = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                vault.logins.append(body)
                if self.path != "/v1/auth/kubernetes/login" or body["jwt"].startswith("bad"):
                    return self._send(403, {"errors": ["permission denied"]})
                self._send(200, {"auth": {"client_token": f"t-{body['jwt']}"}})

            def do_GET(self) -> None:
                if not str(self.headers.get("X-Vault-Token", "")).startswith("t-"):
                    return self._send(403, {"errors": ["permission denied"]})
                data = vault.secrets.get(self.path.removeprefix("/v1/"))
                if data is None:
                    return self._send(404, {"errors": []})
                self._send(200, {"data": {"data": data, "metadata": {"version": 1}}})

            def _send(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    server = FakeVault()
    yield server
    server.server.shutdown()


def _agent(tmp_path: Path, vault: FakeVault) -> int:
    return main(
        ["helper", "secrets-agent", "--once",
         "--address", vault.address, "--role", "payments",
         "--token-file", str(tmp_path / "token"),
         "--annotations-file", str(tmp_path / "annotations"),
         "--dest", str(tmp_path / "secrets")]
    )  # fmt: skip


def test_the_secrets_agent_logs_in_with_the_token_writes_the_secrets_and_rotates_them(
    tmp_path: Path, vault: FakeVault, caplog: pytest.LogCaptureFixture
):
    # The downward API's annotations file, as the kubelet writes it.
    (tmp_path / "annotations").write_text(
        'inject.istio.io/templates="sidecar,secrets-agent"\n'
        'secrets.controlplane.io/role="payments"\n'
        'secrets.controlplane.io/secret-db.json="secret/data/payments/db"\n'
    )
    (tmp_path / "token").write_text("jwt-1\n")
    assert _agent(tmp_path, vault) == 0
    written = tmp_path / "secrets" / "db.json"
    assert json.loads(written.read_text()) == {"password": "one", "user": "app"}
    assert oct(written.stat().st_mode & 0o777) == "0o440"
    assert vault.logins == [{"role": "payments", "jwt": "jwt-1"}]
    assert (tmp_path / "secrets" / ".synced").exists()
    # Rotation: a new secret version and a renewed token are both picked up next round.
    vault.secrets["secret/data/payments/db"] = {"user": "app", "password": "two"}
    (tmp_path / "token").write_text("jwt-2\n")
    assert _agent(tmp_path, vault) == 0
    assert json.loads(written.read_text())["password"] == "two"
    assert vault.logins[-1] == {"role": "payments", "jwt": "jwt-2"}
    # A refused login leaves the last secrets in place (and says why).
    (tmp_path / "token").write_text("bad\n")
    assert _agent(tmp_path, vault) == 1
    assert "secrets-agent: round failed (the files stay as they were)" in caplog.text
    assert "HTTP Error 403" in caplog.text
    assert json.loads(written.read_text())["password"] == "two"


def test_the_downward_api_annotations_file_is_read_with_its_quoting():
    text = 'a="plain"\nb="with \\"quotes\\" and \\\\n"\n'
    assert sync.parse_downward_annotations(text) == {"a": "plain", "b": 'with "quotes" and \\n'}


def test_config_sync_refuses_a_file_name_that_would_leave_its_directory(tmp_path: Path):
    with pytest.raises(ValueError, match="must be a plain name"):
        sync.sync_directory({"../escape": b"x"}, tmp_path / "dest")
    assert not (tmp_path / "escape").exists()


def test_the_log_collector_ships_whole_lines_and_follows_truncation(tmp_path: Path):
    shipped: list[dict] = []
    collector = logs.LogCollector([str(tmp_path / "*.log")], shipped.extend, {"pod": "p"})
    log = tmp_path / "app.log"
    log.write_text("one\ntw")
    collector.poll()
    assert [r["line"] for r in shipped] == ["one"]
    with open(log, "a") as f:
        f.write("o\n")
    collector.poll()
    log.write_text("three\n")  # truncated and rewritten (copytruncate)
    collector.poll()
    assert [r["line"] for r in shipped] == ["one", "two", "three"]
    assert {r["pod"] for r in shipped} == {"p"}


def test_the_log_collector_keeps_lines_while_its_receiver_is_down(tmp_path: Path):
    attempts: list[int] = []
    delivered: list[str] = []

    def flaky(records: list[dict]) -> None:
        attempts.append(len(records))
        if len(attempts) == 1:
            raise OSError("connection refused")
        delivered.extend(r["line"] for r in records)

    collector = logs.LogCollector([str(tmp_path / "*.log")], flaky)
    (tmp_path / "a.log").write_text("first\n")
    collector.poll()
    (tmp_path / "a.log").write_text("first\nsecond\n")
    collector.poll()
    assert delivered == ["first", "second"] and attempts == [1, 2]


def test_a_bad_collector_config_is_refused_with_the_field():
    with pytest.raises(ValueError, match="paths: a non-empty list"):
        logs.collector_from_config({"output": {"stdout": True}})
    with pytest.raises(ValueError, match="output: unknown kind 'kafka'"):
        logs.collector_from_config({"paths": ["/x"], "output": {"kafka": "k"}})


def test_controlplane_inject_applies_file_mode_templates_and_reports_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    examples = REPO / "examples" / "injection-templates"
    code = main(
        ["inject", "-f", str(examples / "pods.yaml"),
         "--templates", str(examples / "templates"), "--native-sidecars", "off"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    web = next(iter(yaml.safe_load_all(out.out)))
    assert [c["name"] for c in web["spec"]["containers"]] == ["web", "istio-proxy", "log-collector"]
    (tmp_path / "broken.yaml").write_text("spec: {containers: [{name: x, image: y, port: 1}]}\n")
    code = main(["inject", "-f", str(examples / "pods.yaml"), "--templates", str(tmp_path)])
    assert code == 2
    assert (
        f"controlplane inject: Error [CP0820 InvalidInjectionTemplate] {tmp_path / 'broken.yaml'}: "
        "spec.containers[0].port: template 'broken': not a field of a Kubernetes container"
    ) in capsys.readouterr().err

"""deploy/ as Prometheus, Grafana, Docker and nginx take it: promtool accepts the configuration and the rules and
runs their unit tests, every Grafana query parses and names only metrics of the contract, compose runs commands
that exist with settings Portwatch reads, and nginx runs the reverse-proxy example in front of a test backend.

promtool comes with Debian's `prometheus` package and nginx with `nginx`; without them these tests skip, and
fail under CI=true. No Docker engine is needed: compose.yml and the Dockerfile are checked as files.
"""

from __future__ import annotations

import gzip
import http.client
import importlib
import json
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
import yaml
from prometheus_client import CONTENT_TYPE_LATEST

from tests.conftest import need
from tests.peers.services import free_port, wait_listening

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "portwatch.json"
COMPOSE = DEPLOY / "compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
NGINX_EXAMPLE = DEPLOY / "nginx" / "portwatch.conf"
TOKEN_FILE = "/etc/prometheus/portwatch.token"  # prometheus.yml's credentials_file
HOST = "portwatch.example.com"

# The metric contract of /metrics and /probe (issue 8): tests/metrics/test_collector.py checks it against a real
# scrape of /metrics (every name there, and nothing else but blackbox's probe_http_uncompressed_body_length).
CONTRACT = frozenset(
    (
        # blackbox_exporter 0.28's names
        "probe_success",
        "probe_duration_seconds",
        "probe_dns_lookup_time_seconds",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
        "probe_ssl_earliest_cert_expiry",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "probe_ssl_last_chain_info",
        "probe_tls_version_info",
        "probe_tls_cipher_info",
        "probe_http_status_code",
        "probe_http_duration_seconds",
        "probe_http_version",
        "probe_http_ssl",
        "probe_http_redirects",
        "probe_http_content_length",
        "probe_failed_due_to_regex",
        "probe_dns_duration_seconds",
        "probe_dns_answer_rrs",
        "probe_dns_authority_rrs",
        "probe_dns_additional_rrs",
        "probe_dns_query_succeeded",
        # Portwatch's own, per service
        "portwatch_probe_phase_seconds",
        "portwatch_service_status",
        "portwatch_probe_failure_info",
        "portwatch_uptime_ratio",
        "portwatch_incident_open",
        "portwatch_last_check_timestamp_seconds",
        "portwatch_checks_total",
        "portwatch_probe_duration_seconds_bucket",
        "portwatch_probe_duration_seconds_sum",
        "portwatch_probe_duration_seconds_count",
        "portwatch_service_info",
        # the daemon's health
        "portwatch_dispatch_lag_seconds",
        "portwatch_dispatcher_last_run_timestamp_seconds",
        "portwatch_queue_depth",
        "portwatch_location_unserved",
        "portwatch_worker_in_flight",
        "portwatch_worker_last_seen_timestamp_seconds",
        "portwatch_workers_recent",
        "portwatch_missed_slots_total",
        "portwatch_probes_total",
        # alerting
        "portwatch_maintenance",
        "portwatch_exposure_version_revealed",
        "portwatch_exposure_plaintext_login",
        "portwatch_alert_channel_healthy",
        "portwatch_alert_notifications",
        "portwatch_alert_delivery_attempts_total",
        "portwatch_notifier_last_run_timestamp_seconds",
    )
)
PROMETHEUS_OWN = frozenset({"up"})  # series Prometheus writes for every scrape


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    need(path is not None, "promtool is not installed (Debian's prometheus package has it)")
    return path


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=60)


# PromQL without a PromQL parser ------------------------------------------------------------------------------

STRINGS = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
MODIFIERS = ("by", "without", "on", "ignoring", "group_left", "group_right")  # each takes a list of labels
LABEL_LISTS = re.compile(rf"\b(?:{'|'.join(MODIFIERS)})\s*\([^()]*\)")
MATCHERS, RANGES = re.compile(r"\{[^{}]*\}"), re.compile(r"\[[^\[\]]*\]")
NAMES = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", *MODIFIERS})


def metric_names(expr: str) -> set[str]:
    """Return the metric names `expr` selects: identifiers that are no function, keyword, label or string.

    Syntax is promtool's business (`check rules`); this only has to find selectors in expressions that parse.
    """
    for pattern in (STRINGS, MATCHERS, RANGES, LABEL_LISTS):
        expr = pattern.sub(" ", expr)
    return {name for name, call in NAMES.findall(expr) if not call and name not in KEYWORDS}


GRAFANA_INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)")  # not $1, label_replace's


def substituted(expr: str, variables: dict[str, str]) -> str:
    """Return `expr` with Grafana's variables replaced by a value each, as Grafana does before querying."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_INTERVALS:
            return GRAFANA_INTERVALS[name]
        if name not in variables:
            raise KeyError(f"${name} is no variable of the dashboard")
        return variables[name]

    return VARIABLE.sub(value, expr)


def test_metric_names_are_the_selectors_not_functions_labels_durations_or_strings():
    expr = (
        'sum by (le, job) (rate(a_bucket{x="b{c}", y=~"d|e"}[5m])) / on (x) group_left (kind) b_info offset 1h'
        ' or label_replace(time() - c_seconds, "host", "$1", "worker", "(.+):[0-9]+") > bool 1e3 unless d'
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c_seconds", "d"}


def test_grafana_variables_are_replaced_and_an_unknown_one_is_refused():
    expr = 'histogram_quantile($q, rate(m{s=~"${s}"}[$__rate_interval]))'
    assert substituted(expr, {"q": "0.9", "s": ".*"}) == 'histogram_quantile(0.9, rate(m{s=~".*"}[5m]))'
    with pytest.raises(KeyError, match=r"\$s is no variable"):
        substituted(expr, {"q": "0.9"})


# prometheus.yml -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_config(tmp_path_factory) -> Path:
    """Return prometheus.yml beside alerts.yml in a folder of its own, with its credentials file there.

    promtool refuses a credentials_file that does not exist, and the real one (/etc/prometheus/) holds a secret.
    """
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "portwatch.token").write_text("a-test-token\n")
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert TOKEN_FILE in text, "prometheus.yml names another credentials file: adapt TOKEN_FILE"
    (folder / "prometheus.yml").write_text(text.replace(TOKEN_FILE, str(folder / "portwatch.token")))
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", folder)
    return folder / "prometheus.yml"


def scrape_configs() -> dict[str, dict]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def discovered(promtool: str, config: Path, job: str) -> list[dict]:
    """Return the job's targets after relabelling, as Prometheus would scrape them."""
    check = run(promtool, "check", "service-discovery", "--timeout=1s", config, job)
    assert check.returncode == 0, check.stderr
    return json.loads(check.stdout)


def test_promtool_accepts_the_prometheus_configuration(promtool, prometheus_config):
    check = run(promtool, "check", "config", prometheus_config)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_probe_job_asks_portwatch_about_each_target_as_a_blackbox_job_asks_the_exporter(
    promtool, prometheus_config
):
    (portwatch,) = discovered(promtool, prometheus_config, "portwatch")
    targets = discovered(promtool, prometheus_config, "portwatch_probe")
    scraped = {
        (t["labels"]["__address__"], t["labels"]["__metrics_path__"], t["labels"]["__param_target"]) for t in targets
    }
    expected = {(portwatch["labels"]["__address__"], "/probe", t["discoveredLabels"]["__address__"]) for t in targets}
    assert (scraped, {t["labels"]["instance"] for t in targets}) == (expected, {s[2] for s in expected})


def test_every_portwatch_job_sends_the_metrics_token():
    files = {name: job["authorization"]["credentials_file"] for name, job in scrape_configs().items()}
    assert files == {"portwatch": TOKEN_FILE, "portwatch_probe": TOKEN_FILE}


def test_the_metrics_job_keeps_the_instance_label_of_each_service():
    # Without honor_labels Prometheus would rename each service's instance (host:port) to exported_instance.
    assert scrape_configs()["portwatch"].get("honor_labels") is True


# alerts.yml ---------------------------------------------------------------------------------------------------


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_alert_rules(promtool):
    check = run(promtool, "check", "rules", PROMETHEUS_DIR / "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_alert_rules_pass_their_unit_tests(promtool):
    check = run(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_alert_has_a_test_where_it_fires_and_one_where_it_stays_silent():
    cases = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    covered = {(check["alertname"], bool(check.get("exp_alerts"))) for check in checks}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {(alert, fires) for alert in alerts for fires in (True, False)} - covered == set()


def test_every_alert_says_what_happened_and_what_to_do_and_how_urgent_it_is():
    unfit = [
        rule["alert"]
        for rule in alert_rules()
        if not {"summary", "description"} <= rule.get("annotations", {}).keys()
        or rule.get("labels", {}).get("severity") not in {"critical", "warning"}
    ]
    assert unfit == []


def test_the_alert_rules_use_only_metrics_of_the_contract():
    used = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    assert used - CONTRACT - PROMETHEUS_OWN == set()


# grafana/portwatch.json ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def sample_values(dashboard: dict) -> dict[str, str]:
    """Return a value for each variable as Grafana would put it in a query: All's regex, a custom's current."""
    values = {}
    for name, variable in variables(dashboard).items():
        if variable.get("includeAll"):
            values[name] = variable.get("allValue") or ".*"
        else:
            values[name] = (variable.get("current") or {}).get("value") or "x"
    return values


def queries(dashboard: dict) -> dict[str, tuple[str, str]]:
    """Return {rule name: (where, PromQL)} for every panel target and variable query, variables substituted."""
    values, found = sample_values(dashboard), {}
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found[f"panel_{panel['id']}_{target['refId']}"] = (panel["title"], substituted(target["expr"], values))
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query).group(1)
            found[f"variable_{name}"] = (f"${name}", substituted(selector, values))
    return found


def test_the_dashboard_can_be_imported_into_any_grafana_with_a_prometheus_data_source(dashboard):
    source = variables(dashboard)["datasource"]
    sources = {
        json.dumps(panel.get("datasource")) for panel in all_panels(dashboard["panels"]) if panel["type"] != "row"
    }
    sources |= {json.dumps(t.get("datasource")) for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])}
    assert (source["type"], source["query"], dashboard["schemaVersion"] >= 36, dashboard["id"], sources) == (
        "datasource",
        "prometheus",
        True,
        None,
        {json.dumps({"type": "prometheus", "uid": "${datasource}"})},
    )


def test_the_service_variable_lists_the_services_of_portwatch_service_info(dashboard):
    query = variables(dashboard)["service"]["query"]
    assert query["query"] == "label_values(portwatch_service_info, service)"


def test_every_dashboard_query_parses(promtool, dashboard, tmp_path):
    found = queries(dashboard)
    rules = [{"record": name, "expr": expr} for name, (_, expr) in found.items()]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = run(promtool, "check", "rules", tmp_path / "dashboard.yml")
    where = "\n".join(f"{name}: {title}: {expr}" for name, (title, expr) in found.items())
    assert check.returncode == 0, f"{check.stdout}{check.stderr}\n{where}"


def test_the_dashboard_uses_only_metrics_of_the_contract(dashboard):
    used = {name: metric_names(expr) for name, (_, expr) in queries(dashboard).items()}
    unknown = {name: names - CONTRACT - PROMETHEUS_OWN for name, names in used.items()}
    assert {name: names for name, names in unknown.items() if names} == {}


def test_the_dashboard_shows_status_latency_certificates_incidents_uptime_and_the_daemon(dashboard):
    exprs = [expr for _, expr in queries(dashboard).values()]
    used = set().union(*map(metric_names, exprs))
    shown = {
        "status": "portwatch_service_status" in used,
        "latency by phase from the histograms": any(
            "histogram_quantile" in e and "portwatch_probe_duration_seconds_bucket" in e and "phase" in e for e in exprs
        ),
        "certificate expiry": "probe_ssl_earliest_cert_expiry" in used,
        "incidents": "portwatch_incident_open" in used,
        "uptime": "portwatch_uptime_ratio" in used,
        "the daemon": {"portwatch_dispatcher_last_run_timestamp_seconds", "portwatch_location_unserved"} <= used,
    }
    assert [topic for topic, present in shown.items() if not present] == []


# compose.yml and the Dockerfile -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<` merge keys as compose does


def portwatch_services(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if "build" in service}


def requirement_names() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {re.split(r"[\[=<>~ ]", line.strip())[0].lower() for line in lines if line.strip()[:1].isalnum()}


def command_problem(command: list[str]) -> str | None:
    """Return why `command` would not run in the image (None when it would): a program requirements.txt does
    not install, a management command Django does not know, an app or a module that is not in the repository.
    """
    from django.core.management import get_commands

    program, *args = command
    if program == "python" and args[:1] == ["manage.py"]:
        return None if args[1] in get_commands() else f"no management command {args[1]!r}"
    if program not in requirement_names():
        return f"requirements.txt does not install {program!r}"
    if program == "celery":
        app = importlib.import_module(args[args.index("-A") + 1])
        return None if hasattr(app, "app") and args[2] in {"worker", "beat"} else f"not a Celery command: {args}"
    if program == "gunicorn":
        module, _, name = args[0].partition(":")
        return None if hasattr(importlib.import_module(module), name) else f"no WSGI application {args[0]!r}"
    return f"unknown program {program!r}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_compose_runs_postgresql_redis_and_portwatchs_web_site_worker_and_beat(compose):
    services = compose["services"]
    images = {name: services[name]["image"].split(":")[0] for name in ("postgres", "redis")}
    assert (images, {"web", "worker", "beat"} <= portwatch_services(compose).keys()) == (
        {"postgres": "postgres", "redis": "redis"},
        True,
    )


def test_every_compose_command_exists_in_the_repository(compose):
    problems = {name: command_problem(service["command"]) for name, service in portwatch_services(compose).items()}
    assert {name: problem for name, problem in problems.items() if problem} == {}


def test_compose_sets_only_variables_that_the_settings_read(compose):
    read = set(re.findall(r"env_\w+\(\s*\"([A-Z0-9_]+)\"", (ROOT / "monitor" / "settings.py").read_text()))
    names = {name for service in portwatch_services(compose).values() for name in service["environment"]}
    assert names - read == set()


def test_compose_runs_gunicorn_as_the_systemd_unit_does_and_the_image_defaults_to_it(compose):
    unit = (DEPLOY / "systemd" / "portwatch-web.service").read_text().replace("\\\n", " ")
    exec_start = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.MULTILINE).group(1))
    exec_start[0] = Path(exec_start[0]).name

    def anywhere(command: list[str]) -> list[str]:
        bind = command.index("--bind") + 1
        return [*command[:bind], "ADDRESS:8000", *command[bind + 1 :]]

    cmd = json.loads(dict(dockerfile_instructions())["CMD"])
    web = compose["services"]["web"]["command"]
    assert (anywhere(web), cmd) == (anywhere(exec_start), web)


def test_the_image_installs_requirements_txt_and_nothing_else():
    runs = [args for instruction, args in dockerfile_instructions() if instruction == "RUN"]
    installs = [step.strip() for args in runs for step in args.split("&&") if re.search(r"\binstall\b|\badd\b", step)]
    installs = [step for step in installs if not step.startswith(("install -d", "groupadd", "useradd"))]
    assert installs == [".venv/bin/pip install --no-cache-dir -r requirements.txt"]


def test_the_build_context_leaves_out_the_secret_key_the_venv_and_git():
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"var", ".venv", ".git"} <= set(ignored)


# nginx/portwatch.conf -----------------------------------------------------------------------------------------


class Backend(BaseHTTPRequestHandler):
    """Stand in for gunicorn: answer every request with the path and headers it arrived with, as text/plain."""

    protocol_version = "HTTP/1.1"  # the example keeps upstream connections alive

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)  # what /metrics answers with
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def adapted_nginx(folder: Path, *, http: int, https: int, upstream: int, cert: Path, key: Path) -> Path:
    """Write the example into `folder` with loopback ports, test certificates and a static folder of its own,
    inside a main configuration that keeps every file in `folder`; return the main configuration's path.
    """
    text = NGINX_EXAMPLE.read_text()
    for old, new in [
        ("listen 80;", f"listen 127.0.0.1:{http};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
        (f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(cert)),
        (f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(key)),
        ("alias /var/lib/portwatch/static/;", f"alias {folder}/static/;"),
    ]:
        assert text.count(old) == 1, f"deploy/nginx/portwatch.conf changed: adapt this test's {old!r}"
        text = text.replace(old, new)
    (folder / "portwatch.conf").write_text(text)
    temp = " ".join(
        f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    main.write_text(
        f"daemon off; master_process off; pid {folder}/nginx.pid; error_log {folder}/error.log;\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{ access_log off; {temp} include {folder}/portwatch.conf; }}\n"
    )
    return main


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")  # not on a user's PATH
    need(path is not None, "nginx is not installed (Debian's nginx package)")
    return path


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def proxy(nginx_binary, ca, tmp_path_factory) -> Iterator[dict[str, int]]:
    """Run the example in front of a Backend; return its ports {"http": ..., "https": ...}."""
    folder = tmp_path_factory.mktemp("nginx")
    (folder / "static" / "dashboard").mkdir(parents=True)
    (folder / "static" / "dashboard" / "portwatch.css").write_text("body { margin: 0 }\n")
    leaf = ca.issue_cert(HOST)
    leaf.private_key_pem.write_to_path(str(folder / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    ports = {"http": free_port(), "https": free_port()}
    config = adapted_nginx(
        folder, **ports, upstream=backend.server_address[1], cert=folder / "cert.pem", key=folder / "key.pem"
    )
    command = [nginx_binary, "-e", str(folder / "error.log"), "-p", str(folder), "-c", str(config)]
    test = run(*command, "-t", "-q")
    assert test.returncode == 0, test.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(ports["https"], process, folder / "error.log", timeout=10)
        yield ports
    finally:
        process.terminate()
        process.wait(timeout=10)
        backend.shutdown()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(proxy: dict[str, int], ca: trustme.CA, path: str, *, https: bool = True, **headers: str) -> Reply:
    """GET `path` from the proxy as a browser or Prometheus at https://portwatch.example.com would;
    `X_Forwarded_Proto="http"` sends the header X-Forwarded-Proto.
    """
    connection = http.client.HTTPConnection("127.0.0.1", proxy["https" if https else "http"], timeout=10)
    if https:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        raw = socket.create_connection(("127.0.0.1", proxy["https"]), timeout=10)
        connection.sock = context.wrap_socket(raw, server_hostname=HOST)
    connection.request("GET", path, headers={"Host": HOST, **{k.replace("_", "-"): v for k, v in headers.items()}})
    try:
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def seen_by_portwatch(reply: Reply) -> dict:
    """Return what the backend standing in for Portwatch received: {"path": ..., "headers": {...}}."""
    return json.loads(reply.body)


def test_nginx_accepts_the_example(nginx_binary, ca, tmp_path):
    leaf = ca.issue_cert(HOST)
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    config = adapted_nginx(tmp_path, http=1, https=2, upstream=3, cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    check = run(nginx_binary, "-t", "-q", "-e", tmp_path / "error.log", "-p", tmp_path, "-c", config)
    assert check.returncode == 0, check.stderr


def test_portwatch_learns_the_host_and_that_the_request_came_over_https_whatever_the_client_claims(proxy, ca):
    headers = seen_by_portwatch(fetch(proxy, ca, "/admin/login/", X_Forwarded_Proto="http"))["headers"]
    assert (headers["Host"], headers["X-Forwarded-Proto"]) == (HOST, "https")


@pytest.mark.parametrize("path", ["/metrics", "/probe?target=mail.example.com:587&module=smtp_starttls"])
def test_prometheus_scrapes_reach_portwatch_with_their_token(proxy, ca, path):
    seen = seen_by_portwatch(fetch(proxy, ca, path, Authorization="Bearer a-token"))
    assert (seen["path"], seen["headers"]["Authorization"]) == (path, "Bearer a-token")


def test_metrics_are_compressed_for_prometheus(proxy, ca):
    response = fetch(proxy, ca, "/metrics", Accept_Encoding="gzip")
    assert (response.headers["Content-Encoding"], json.loads(gzip.decompress(response.body))["path"]) == (
        "gzip",
        "/metrics",
    )


def test_the_proxy_serves_static_files_itself(proxy, ca):
    assert fetch(proxy, ca, "/static/dashboard/portwatch.css").body == b"body { margin: 0 }\n"


def test_plain_http_is_redirected_to_https(proxy, ca):
    response = fetch(proxy, ca, "/admin/?next=1", https=False)
    assert (response.status, response.headers["Location"]) == (301, f"https://{HOST}/admin/?next=1")

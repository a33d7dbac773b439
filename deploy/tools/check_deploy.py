"""Checks of the deployment files beyond what the schemas and promtool check.

scripts/check-deploy.sh runs each subcommand with its virtual environment's
Python (PyYAML). Each prints what it checked, prints one line per problem
on stderr, and exits 1 if there was any.

    workloads FILE...          rendered Kustomize output (pod_checks.py)
    operator RENDERED...       PodMonitor and PrometheusRule in deploy/prometheus/operator
    rules                      metric and label names in deploy/prometheus/rules.yml
    dashboard OUT              deploy/grafana/hallmark.json; writes its queries to OUT
                               as recording rules, for `promtool check rules`
    scrape OUT                 writes deploy/prometheus/scrape.yml with static targets to OUT,
                               for promtool builds without Kubernetes discovery
    dockerfile                 Dockerfile stages, COPY sources and .dockerignore
    sync-rules [--write]       regenerate operator/prometheusrule.yaml from rules.yml
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pod_checks  # noqa: E402
import promql_names  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
OPERATOR = DEPLOY / "prometheus" / "operator"
DASHBOARD = DEPLOY / "grafana" / "hallmark.json"
METRICS_RS = REPO / "src" / "metrics.rs"

#: Fields of the PodMonitorSpec and PodMetricsEndpoint types of
#: prometheus-operator's monitoring.coreos.com/v1 API. The CRD schemas are
#: not in kubernetes-validate, so this shallow check replaces them.
PODMONITOR_SPEC_FIELDS = {
    "selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels", "sampleLimit",
    "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
}
PODMETRICS_ENDPOINT_FIELDS = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig",
    "bearerTokenSecret", "honorLabels", "honorTimestamps", "basicAuth", "oauth2", "authorization",
    "metricRelabelings", "relabelings", "proxyUrl", "followRedirects", "enableHttp2", "filterRunning",
}
#: Grafana variables and the values that replace them when the dashboard's
#: queries are handed to promtool.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
}

PROBLEMS: List[str] = []


def problem(message: str) -> None:
    PROBLEMS.append(message)
    print(f"  problem: {message}", file=sys.stderr)


def load_all(path: Path) -> List[Dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def check_workloads(paths: List[str]) -> None:
    for path in map(Path, paths):
        documents = load_all(path)
        config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d.get("kind") == "ConfigMap"}
        pods = 0
        for document in documents:
            if document.get("kind") == "Service":
                _check_service(path, document)
            for name, pod, claims in pod_checks.pod_templates(document):
                pods += 1
                for message in pod_checks.check_pod(name, pod, claims, config_maps):
                    problem(f"{path.name}: {message}")
        if pods == 0:
            problem(f"{path}: no workload with a pod template")
        print(f"workloads: {path.name}: {pods} pod templates checked (restricted security, port names, volumes, sidecar)")


def _check_service(path: Path, service: Dict[str, Any]) -> None:
    for port in service.get("spec", {}).get("ports", []):
        target = port.get("targetPort")
        if isinstance(target, str) and pod_checks.port_name_problem(target):
            problem(f"{path.name}: Service/{service['metadata']['name']}: targetPort {pod_checks.port_name_problem(target)}")


def check_operator(rendered: List[str]) -> None:
    podmonitor = _single(OPERATOR / "podmonitor.yaml", "PodMonitor")
    rule = _single(OPERATOR / "prometheusrule.yaml", "PrometheusRule")
    if podmonitor is not None:
        _check_podmonitor(podmonitor, rendered)
    if rule is not None:
        if set(rule.get("spec", {})) != {"groups"}:
            problem(f"prometheusrule.yaml: spec has {sorted(rule.get('spec', {}))}; expected only groups")
        if rule.get("spec") != yaml.safe_load(RULES.read_text(encoding="utf-8")):
            problem("prometheusrule.yaml: spec differs from rules.yml; run deploy/tools/check_deploy.py sync-rules --write")
        else:
            print("operator: prometheusrule.yaml spec equals rules.yml")


def _single(path: Path, kind: str) -> Dict[str, Any] | None:
    documents = load_all(path)
    if len(documents) != 1:
        problem(f"{path.name}: expected one document, found {len(documents)}")
        return None
    document = documents[0]
    if document.get("apiVersion") != "monitoring.coreos.com/v1" or document.get("kind") != kind:
        problem(f"{path.name}: expected monitoring.coreos.com/v1 {kind}")
    if not document.get("metadata", {}).get("name"):
        problem(f"{path.name}: metadata.name is missing")
    return document


def _check_podmonitor(podmonitor: Dict[str, Any], rendered: List[str]) -> None:
    spec = podmonitor.get("spec", {})
    unknown = set(spec) - PODMONITOR_SPEC_FIELDS
    if unknown:
        problem(f"podmonitor.yaml: unknown spec fields {sorted(unknown)}")
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        problem("podmonitor.yaml: spec.podMetricsEndpoints is empty")
    for endpoint in endpoints:
        if set(endpoint) - PODMETRICS_ENDPOINT_FIELDS:
            problem(f"podmonitor.yaml: unknown endpoint fields {sorted(set(endpoint) - PODMETRICS_ENDPOINT_FIELDS)}")
    match_labels = spec.get("selector", {}).get("matchLabels", {})
    if not match_labels:
        problem("podmonitor.yaml: spec.selector.matchLabels is empty")

    # Every rendered pod with the sidecar must be selected, on a port it has.
    selected = 0
    for path in map(Path, rendered):
        for document in load_all(path):
            for name, pod, _ in pod_checks.pod_templates(document):
                sidecar = next((c for c in pod.get("initContainers", []) if c["name"] == pod_checks.SIDECAR_NAME), None)
                if sidecar is None:
                    continue
                labels = document["spec"]["template"]["metadata"].get("labels", {})
                if any(labels.get(key) != value for key, value in match_labels.items()):
                    problem(f"podmonitor.yaml: selector {match_labels} does not select {path.name} {name}")
                ports = {port.get("name") for port in sidecar.get("ports", [])}
                for endpoint in endpoints:
                    if endpoint.get("port") not in ports:
                        problem(f"podmonitor.yaml: port {endpoint.get('port')} is not a port of the sidecar in {name}")
                selected += 1
    if selected == 0:
        problem("podmonitor.yaml: no rendered pod has the Hallmark sidecar to check the selector against")
    print(f"operator: podmonitor.yaml fields known, selects the sidecar in {selected} rendered pod templates")


def check_rules() -> None:
    catalogue = promql_names.load_catalogue(METRICS_RS)
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            count += 1
            for message in promql_names.expression_problems(str(rule["expr"]), catalogue):
                problem(f"rules.yml {rule.get('alert') or rule.get('record')}: {message}")
    print(f"rules: {count} rule expressions use only metrics and labels of src/metrics.rs")


def check_dashboard(out: str) -> None:
    catalogue = promql_names.load_catalogue(METRICS_RS)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for field in ("title", "uid", "panels", "templating", "schemaVersion"):
        if field not in dashboard:
            problem(f"hallmark.json: {field} is missing")
    variables = {variable["name"] for variable in dashboard.get("templating", {}).get("list", [])}
    ids = set()
    charts = 0
    queries: List[str] = []
    for panel in _panels(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            problem(f"hallmark.json: panel id {panel.get('id')} is used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problem(f"hallmark.json panel {title!r}: gridPos reaches past column 24")
        if panel.get("type") == "row":
            continue
        charts += 1
        if not panel.get("targets"):
            problem(f"hallmark.json panel {title!r}: no queries")
        for target in panel.get("targets", []):
            queries.append(_dashboard_query(title, target.get("expr", ""), variables, catalogue))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            match = re.fullmatch(r"label_values\((.*),\s*([a-z_]+)\)", variable["definition"])
            if match is None:
                problem(f"hallmark.json variable {variable['name']}: expected label_values(selector, label)")
                continue
            queries.append(_dashboard_query(f"${variable['name']}", match.group(1), variables, catalogue))
            _check_label(f"${variable['name']}", match.group(1), match.group(2), catalogue)

    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": expr} for index, expr in enumerate(queries)
    ]}]}
    Path(out).write_text(yaml.safe_dump(recording, sort_keys=False), encoding="utf-8")
    print(f"dashboard: {charts} panels and {len(queries)} queries parse as JSON and use only "
          f"metrics and labels of src/metrics.rs; queries written to {out} for promtool")


def _panels(panels: List[Dict[str, Any]]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_query(where: str, expr: str, variables: set, catalogue) -> str:
    for name, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    for name in re.findall(r"\$(\w+)", expr):
        if name not in variables:
            problem(f"hallmark.json {where}: ${name} is not a dashboard variable")
    expr = re.sub(r"\$\w+", ".*", expr)
    for message in promql_names.expression_problems(expr, catalogue):
        problem(f"hallmark.json {where}: {message}")
    return expr


def _check_label(where: str, selector: str, label: str, catalogue) -> None:
    names = [name for name in re.findall(r"\bhallmark_[a-z0-9_]+", selector) if name in catalogue]
    allowed = promql_names.TARGET_LABELS.union(*(catalogue[name].labels for name in names))
    if label not in allowed:
        problem(f"hallmark.json {where}: {names} has no label {label}")


def write_static_scrape(out: str) -> None:
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    for job in config.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is None:
            problem(f"scrape.yml job {job.get('job_name')}: expected kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    config["rule_files"] = [str(RULES.parent / name) for name in config.get("rule_files", [])]
    Path(out).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    print(f"scrape: scrape.yml written to {out} with a static target in place of Kubernetes discovery")


def check_dockerfile() -> None:
    lines = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text(encoding="utf-8")).splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    ignored = [
        line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    stages: List[str] = []
    users: Dict[str, str] = {}
    copies = 0
    for instruction in instructions:
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)$", rest, re.IGNORECASE)
            stages.append(match.group(1) if match else f"stage-{len(stages)}")
        elif keyword == "USER":
            users[stages[-1]] = rest.strip()
        elif keyword == "COPY":
            copies += 1
            _check_copy(rest, stages, ignored)
    if not stages:
        problem("Dockerfile: no FROM")
    elif users.get(stages[-1], "root").split(":")[0] in ("root", "0"):
        problem(f"Dockerfile: the final stage {stages[-1]} does not switch to a non-root USER")
    if not any("cargo build --release --locked --bin hallmark" in line for line in instructions):
        problem("Dockerfile: no `cargo build --release --locked --bin hallmark`")
    print(f"dockerfile: {len(stages)} stages, {copies} COPY instructions whose sources exist and are not "
          f"excluded by .dockerignore, final stage runs as {users.get(stages[-1]) if stages else '?'}")


def _check_copy(arguments: str, stages: List[str], ignored: List[str]) -> None:
    words = arguments.split()
    options = [word for word in words if word.startswith("--")]
    paths = [word for word in words if not word.startswith("--")]
    source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
    if source_stage is not None:
        if source_stage not in stages[:-1]:
            problem(f"Dockerfile: COPY --from={source_stage} names no earlier stage")
        return
    for source in paths[:-1]:
        if not (REPO / source).exists():
            problem(f"Dockerfile: COPY source {source} does not exist")
        if any(_ignored(source, pattern) for pattern in ignored):
            problem(f"Dockerfile: COPY source {source} is excluded by .dockerignore")


def _ignored(source: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    pattern = pattern.lstrip("/").rstrip("/")
    source = source.rstrip("/")
    return not pattern.startswith("!") and (fnmatch(source, pattern) or source.startswith(pattern + "/"))


def sync_rules(write: bool) -> None:
    rules_text = RULES.read_text(encoding="utf-8")
    body = rules_text[rules_text.index("groups:"):]
    generated = (
        "# Generated from ../rules.yml by `deploy/tools/check_deploy.py sync-rules --write`:\n"
        "# edit rules.yml, then run that command. scripts/check-deploy.sh fails\n"
        "# while the two differ.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: hallmark\n"
        "spec:\n"
        + "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))
    )
    target = OPERATOR / "prometheusrule.yaml"
    if write:
        target.write_text(generated, encoding="utf-8")
        print(f"sync-rules: wrote {target.relative_to(REPO)}")
    elif not target.exists() or target.read_text(encoding="utf-8") != generated:
        problem(f"{target.relative_to(REPO)} is not what rules.yml generates; run sync-rules --write")
    else:
        print(f"sync-rules: {target.relative_to(REPO)} is up to date")


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 64
    command, arguments = argv[0], argv[1:]
    if command == "workloads":
        check_workloads(arguments)
    elif command == "operator":
        check_operator(arguments)
    elif command == "rules":
        check_rules()
    elif command == "dashboard" and len(arguments) == 1:
        check_dashboard(arguments[0])
    elif command == "scrape" and len(arguments) == 1:
        write_static_scrape(arguments[0])
    elif command == "dockerfile":
        check_dockerfile()
    elif command == "sync-rules":
        sync_rules("--write" in arguments)
    else:
        print(__doc__, file=sys.stderr)
        return 64
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env bash
# Renders and checks the deployment files: the Kustomize layouts in
# deploy/kubernetes, the Prometheus and Prometheus Operator files in
# deploy/prometheus, the Grafana dashboard and the Dockerfile. Nothing is
# applied to a cluster and no image is built.
#
# Usage: scripts/check-deploy.sh
#
# Checks, each reported as it runs; the script goes on after a failure and
# exits 1 if any check failed:
#   1. `kubectl kustomize` renders every kustomization (components are
#      rendered through the kustomizations that use them);
#   2. kubernetes-validate, in strict mode (unknown fields are errors),
#      validates each rendering against the Kubernetes 1.29 schemas, the
#      first release with native sidecars on by default, and against the
#      newest release it bundles;
#   3. deploy/tools/check_deploy.py checks what schemas cannot. It checks
#      the rendered pods against the restricted Pod Security Standard, and
#      the sidecar's probes, ports, socket, PIN, audit volume and
#      configuration. It checks the PodMonitor and PrometheusRule, custom
#      resources that have no schema here. It checks the metric and label
#      names in the rules and the dashboard against src/metrics.rs, and the
#      Dockerfile's COPY sources;
#   4. promtool lints deploy/prometheus/rules.yml, runs its unit tests in
#      rules.test.yml, parses the dashboard's queries and checks scrape.yml.
#
# It installs what a Debian machine lacks, and skips each step that is
# done. kubectl comes from apt-get, where a Kubernetes package repository is
# configured. scripts/prometheus-tools.sh unpacks promtool from Debian's
# prometheus package with `apt-get download`, so that no Prometheus server
# is installed and started.
# The packages in deploy/tools/requirements.txt go into a virtual
# environment. Once installed, it runs in seconds.
#
# Environment:
#   HALLMARK_DEPLOY_TOOLS   directory for promtool and the virtual environment
#                           (default: target/deploy-tools, which git ignores)
#   PYTHON                  interpreter that creates the venv (default: python3)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tools=${HALLMARK_DEPLOY_TOOLS:-$repo/target/deploy-tools}
python=${PYTHON:-python3}
venv=$tools/venv
# Native sidecars (init containers with restartPolicy Always) are on by
# default from Kubernetes 1.29.
min_kubernetes=1.29.0

log() { echo "check-deploy: $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    log "run as root or install sudo to run: $*"
    return 77
  fi
}

apt_updated=0
apt_update_once() {
  if [[ $apt_updated -eq 0 ]]; then
    as_root apt-get update -qq >&2
    apt_updated=1
  fi
}

ensure_kubectl() {
  if ! command -v kubectl >/dev/null; then
    command -v apt-get >/dev/null || { log "kubectl not found; install kubectl 1.21 or newer"; exit 69; }
    log "kubectl not found; installing it with apt-get"
    apt_update_once
    # Debian's own kubernetes-client package is 1.20, whose kustomize
    # (v2.0.3) predates components, so only the kubectl package of a
    # Kubernetes package repository will do.
    if ! DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq kubectl >&2; then
      log "apt-get cannot install kubectl here; install kubectl 1.21 or newer (kustomize v4 or newer)"
      exit 69
    fi
  fi
  local kustomize
  kustomize=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
  if [[ -z "$kustomize" || "$kustomize" -lt 4 ]]; then
    log "kubectl's kustomize is v${kustomize:-unknown}; components need v4 or newer (kubectl 1.21 or newer)"
    exit 69
  fi
}

# scripts/prometheus-tools.sh unpacks promtool, with the Prometheus server
# that tests/prometheus.rs runs, into $tools/bin. A promtool on PATH serves
# where that script cannot run, for example without apt-get.
ensure_promtool() {
  promtool=$tools/bin/promtool
  if HALLMARK_DEPLOY_TOOLS=$tools "$repo/scripts/prometheus-tools.sh"; then
    return
  fi
  if command -v promtool >/dev/null; then
    promtool=$(command -v promtool)
    log "using $promtool"
    return
  fi
  log "promtool not found; install Prometheus's promtool"
  exit 69
}

ensure_venv() {
  local requirements=$repo/deploy/tools/requirements.txt
  local stamp=$venv/.requirements.sha256 wanted
  wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && -f "$stamp" && $(cat "$stamp") == "$wanted" ]]; then
    return
  fi
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv with apt-get"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >&2
  fi
  log "creating $venv with the packages in deploy/tools/requirements.txt"
  rm -rf "$venv"
  mkdir -p "$tools"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$wanted" > "$stamp"
}

ensure_kubectl
ensure_promtool
ensure_venv

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
checker=("$venv/bin/python" "$repo/deploy/tools/check_deploy.py")
passed=0
failed=()

# Runs one named check, shows its output, and records the result.
check() {
  local name=$1
  shift
  echo "--- $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

newest_kubernetes=$("$venv/bin/python" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')
echo "tools: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "tools: $("$promtool" --version 2>&1 | head -n 1), kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"

# Fails on any schema error, and on a kind that has no schema, which
# kubernetes-validate only warns about.
validate() {
  local file=$1 version output
  for version in "$min_kubernetes" "$newest_kubernetes"; do
    if ! output=$("$venv/bin/kubernetes-validate" --strict -k "$version" "$file" 2>&1); then
      echo "$output"
      return 1
    fi
    echo "$output" | sed 's/^/  /'
    if grep -q "Couldn't find schema" <<<"$output"; then
      return 1
    fi
  done
}

core_renders=()
operator_render=""
while IFS= read -r kustomization; do
  dir=$(dirname "$kustomization")
  relative=${dir#"$repo/"}
  if grep -q '^kind: Component' "$kustomization"; then
    echo "--- $relative is a component: rendered through the kustomizations that use it"
    continue
  fi
  out=$work/$(echo "$relative" | tr '/' '_').yaml
  check "kubectl kustomize $relative" kubectl kustomize "$dir" -o "$out" || continue
  [[ -s "$out" ]] || continue
  if [[ "$relative" == deploy/prometheus/operator ]]; then
    operator_render=$out
    echo "--- $relative holds a PodMonitor and a PrometheusRule, custom resources without" \
      "a schema in kubernetes-validate; check_deploy.py operator checks them instead"
    continue
  fi
  check "kubernetes-validate --strict $relative (Kubernetes $min_kubernetes and $newest_kubernetes)" validate "$out"
  core_renders+=("$out")
done < <(find "$repo/deploy" -name kustomization.yaml | sort)

if [[ ${#core_renders[@]} -gt 0 ]]; then
  check "pod templates in the rendered manifests" "${checker[@]}" workloads "${core_renders[@]}"
  check "PodMonitor and PrometheusRule" "${checker[@]}" operator "${core_renders[@]}"
fi
[[ -n "$operator_render" ]] || { echo "FAILED: deploy/prometheus/operator was not rendered"; failed+=("operator render"); }

check "operator/prometheusrule.yaml generated from rules.yml" "${checker[@]}" sync-rules
check "promtool check rules deploy/prometheus/rules.yml" "$promtool" check rules "$repo/deploy/prometheus/rules.yml"
check "promtool test rules deploy/prometheus/rules.test.yml" \
  bash -c 'cd "$1/deploy/prometheus" && "$2" test rules rules.test.yml' _ "$repo" "$promtool"
check "metric and label names in rules.yml" "${checker[@]}" rules

# Debian's promtool is built without Kubernetes service discovery, so the
# configuration is checked with a static target in its place.
if check "scrape.yml with a static target" "${checker[@]}" scrape "$work/scrape.yml"; then
  check "promtool check config deploy/prometheus/scrape.yml" "$promtool" check config "$work/scrape.yml"
fi
if check "Grafana dashboard deploy/grafana/hallmark.json" "${checker[@]}" dashboard "$work/dashboard-rules.yml"; then
  check "promtool parses the dashboard's queries" "$promtool" check rules "$work/dashboard-rules.yml"
fi

check "Dockerfile and .dockerignore" "${checker[@]}" dockerfile
check "bash -n deploy/kubernetes/examples/softhsm-demo/init-token.sh" \
  bash -n "$repo/deploy/kubernetes/examples/softhsm-demo/init-token.sh"
check "python compiles deploy/kubernetes/base/model_service.py" \
  "$venv/bin/python" -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' \
  "$repo/deploy/kubernetes/base/model_service.py"

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "check-deploy: ${#failed[@]} of $((passed + ${#failed[@]})) checks FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "check-deploy: all $passed checks passed"

"""Checks of rendered pod templates that the Kubernetes schemas cannot make.

Every container must meet the "restricted" Pod Security Standard and have
resource requests and limits. Every volumeMount must name a volume. A pod
with the Hallmark sidecar must run it as a native sidecar whose probes,
ports, socket, PIN, configuration and audit volume fit together, and the
configuration it mounts must parse and admit a user that runs in the pod.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10 use the backport
    import tomli as tomllib

SIDECAR_NAME = "hallmark"
#: Volume types that the restricted Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
#: Seconds after SIGTERM that Hallmark may take: server.drain_timeout (10 s
#: by default) plus up to 8 s for the final checkpoint and closing sessions.
SHUTDOWN_SECONDS = 18
#: A named port (a containerPort's name, or a Service's targetPort by name)
#: must be an IANA service name. The API server checks this and the JSON
#: schemas do not. Such a name has at most 15 lowercase letters, digits and
#: inner single hyphens, with at least one letter.
_IANA_SERVICE_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")

Pod = Dict[str, Any]


def pod_templates(document: Dict[str, Any]) -> Iterator[Tuple[str, Pod, List[Dict[str, Any]]]]:
    """Yield (resource name, pod spec, volumeClaimTemplates) of each workload in a manifest."""
    kind = document.get("kind")
    name = f"{kind}/{document.get('metadata', {}).get('name')}"
    spec = document.get("spec") or {}
    if kind == "Pod":
        yield name, spec, []
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield name, spec["template"]["spec"], spec.get("volumeClaimTemplates", [])
    elif kind == "CronJob":
        yield name, spec["jobTemplate"]["spec"]["template"]["spec"], []


def port_name_problem(port_name: str) -> Optional[str]:
    """Return why port_name is not a valid IANA service name, or None."""
    if _IANA_SERVICE_NAME.match(port_name):
        return None
    return f"port name {port_name!r} is not an IANA service name (at most 15 characters, a-z, 0-9 and inner hyphens)"


def check_pod(name: str, pod: Pod, claims: List[Dict[str, Any]], config_maps: Dict[str, Dict[str, str]]) -> List[str]:
    """Return every problem found in one pod template."""
    problems: List[str] = []
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    claim_names = {claim["metadata"]["name"] for claim in claims}
    problems += [f"{name}: {problem}" for problem in _pod_security(pod, volumes)]
    for container in _containers(pod):
        where = f"{name} container {container['name']}"
        problems += [f"{where}: {problem}" for problem in _container_security(pod, container)]
        for port in container.get("ports", []):
            if "name" in port and port_name_problem(port["name"]):
                problems.append(f"{where}: {port_name_problem(port['name'])}")
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes and mount["name"] not in claim_names:
                problems.append(f"{where}: volumeMount {mount['name']} names no volume or volumeClaimTemplate")
    sidecar = _sidecar(pod)
    if sidecar is not None:
        problems += [f"{name}: {problem}" for problem in _check_sidecar(pod, sidecar, volumes, claim_names, config_maps)]
    return problems


def _containers(pod: Pod) -> List[Dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))


def _sidecar(pod: Pod) -> Optional[Dict[str, Any]]:
    for container in _containers(pod):
        if container["name"] == SIDECAR_NAME:
            return container
    return None


def _pod_security(pod: Pod, volumes: Dict[str, Dict[str, Any]]) -> List[str]:
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is set, which the restricted standard forbids")
    for volume in volumes.values():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is of type {sorted(kinds)}, which the restricted standard forbids")
    return problems


def _container_security(pod: Pod, container: Dict[str, Any]) -> List[str]:
    pod_context = pod.get("securityContext", {})
    context = container.get("securityContext", {})
    problems = []
    if context.get("privileged"):
        problems.append("privileged is true")

    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        problems.append("capabilities.drop does not contain ALL")
    if capabilities.get("add"):
        problems.append(f"capabilities.add is {capabilities['add']}; add none")
    if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not true in the container or the pod")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        problems.append("runAsUser is 0")

    seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile is neither RuntimeDefault nor Localhost")
    for port in container.get("ports", []):
        if port.get("hostPort"):
            problems.append(f"port {port.get('name', port['containerPort'])} sets hostPort, which the restricted standard forbids")

    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                problems.append(f"resources.{kind}.{resource} is missing")
    return problems


def _env(container: Dict[str, Any]) -> Dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def _mount_at(container: Dict[str, Any], directory: str) -> Optional[Dict[str, Any]]:
    """Return the volumeMount whose mountPath is directory or contains it."""
    best = None
    for mount in container.get("volumeMounts", []):
        path = mount["mountPath"].rstrip("/")
        if directory == path or directory.startswith(path + "/"):
            if best is None or len(path) > len(best["mountPath"].rstrip("/")):
                best = mount
    return best


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _check_sidecar(
    pod: Pod,
    sidecar: Dict[str, Any],
    volumes: Dict[str, Dict[str, Any]],
    claim_names: set,
    config_maps: Dict[str, Dict[str, str]],
) -> List[str]:
    problems: List[str] = []
    init_names = [container["name"] for container in pod.get("initContainers", [])]
    if SIDECAR_NAME not in init_names or sidecar.get("restartPolicy") != "Always":
        problems.append("the hallmark container is not an init container with restartPolicy Always (a native sidecar)")
    env = _env(sidecar)

    problems += _check_probes(sidecar, env)
    problems += _check_ports(sidecar, env)
    problems += _check_socket(pod, sidecar, env, volumes)

    pin_mount = _mount_at(sidecar, _parent(env.get("HALLMARK_PIN_FILE", "")))
    if pin_mount is None or "secret" not in volumes.get(pin_mount["name"], {}) or not pin_mount.get("readOnly"):
        problems.append("HALLMARK_PIN_FILE is not on a Secret volume mounted readOnly")

    audit_mount = _mount_at(sidecar, env.get("HALLMARK_AUDIT_DIR", "/var/lib/hallmark/audit"))
    if audit_mount is None:
        problems.append("the audit directory is on no volume")
    elif audit_mount["name"] not in claim_names and "persistentVolumeClaim" not in volumes.get(audit_mount["name"], {}):
        problems.append(f"the audit directory is on volume {audit_mount['name']}, which is not a PersistentVolumeClaim")

    if pod.get("terminationGracePeriodSeconds", 30) < SHUTDOWN_SECONDS:
        problems.append(f"terminationGracePeriodSeconds is under the {SHUTDOWN_SECONDS} s that Hallmark may need to stop")
    if "fsGroup" not in pod.get("securityContext", {}):
        problems.append("the pod sets no fsGroup, so other containers cannot reach the 0660 socket")

    problems += _check_order(pod, sidecar, init_names)
    problems += _check_config(pod, sidecar, volumes, config_maps)
    return problems


def _check_probes(sidecar: Dict[str, Any], env: Dict[str, str]) -> List[str]:
    problems = []
    health_port = env.get("HALLMARK_HEALTH_LISTEN", "").rpartition(":")[2]
    expected = {"startupProbe": "", "readinessProbe": "", "livenessProbe": "liveness"}
    for probe_name, service in expected.items():
        grpc = sidecar.get(probe_name, {}).get("grpc")
        if grpc is None:
            problems.append(f"{probe_name} is not a grpc probe")
            continue
        if str(grpc.get("port")) != health_port:
            problems.append(f"{probe_name} probes port {grpc.get('port')}, but HALLMARK_HEALTH_LISTEN is port {health_port!r}")
        if grpc.get("service", "") != service:
            problems.append(f"{probe_name} asks for service {grpc.get('service', '')!r}; expected {service!r}")
    return problems


def _check_ports(sidecar: Dict[str, Any], env: Dict[str, str]) -> List[str]:
    ports = {port.get("name"): port["containerPort"] for port in sidecar.get("ports", [])}
    problems = []
    for port_name, variable in (("hallmark-admin", "HALLMARK_METRICS_LISTEN"), ("hallmark-health", "HALLMARK_HEALTH_LISTEN")):
        listen_port = env.get(variable, "").rpartition(":")[2]
        if str(ports.get(port_name)) != listen_port:
            problems.append(f"port {port_name} is {ports.get(port_name)}, but {variable} is port {listen_port!r}")
    return problems


def _check_socket(pod: Pod, sidecar: Dict[str, Any], env: Dict[str, str], volumes: Dict[str, Dict[str, Any]]) -> List[str]:
    listen = env.get("HALLMARK_LISTEN", "")
    if not listen.startswith("unix:/"):
        return [f"HALLMARK_LISTEN is {listen!r}, not a unix: socket path"]
    socket_dir = _parent(listen[len("unix:"):])
    mount = _mount_at(sidecar, socket_dir)
    if mount is None or "emptyDir" not in volumes.get(mount["name"], {}):
        return [f"the socket directory {socket_dir} is not on an emptyDir volume"]
    problems = []
    for container in pod.get("containers", []):
        target = _env(container).get("HALLMARK_TARGET")
        if target is None:
            continue
        if target != listen:
            problems.append(f"container {container['name']} calls {target}, but Hallmark listens on {listen}")
        peer_mount = _mount_at(container, socket_dir)
        if peer_mount is None or peer_mount["name"] != mount["name"]:
            problems.append(f"container {container['name']} does not mount volume {mount['name']} at {socket_dir}")
    return problems


def _check_order(pod: Pod, sidecar: Dict[str, Any], init_names: List[str]) -> List[str]:
    """An init container that writes to a volume the sidecar also mounts
    (other than the socket's) prepares state for it, so it must come first."""
    if SIDECAR_NAME not in init_names:
        return []
    position = init_names.index(SIDECAR_NAME)
    sidecar_volumes = {mount["name"] for mount in sidecar.get("volumeMounts", [])}
    problems = []
    for container in pod.get("initContainers", [])[position + 1 :]:
        shared = {m["name"] for m in container.get("volumeMounts", []) if not m.get("readOnly")} & sidecar_volumes
        if shared and container.get("restartPolicy") != "Always":
            problems.append(
                f"init container {container['name']} writes volume {sorted(shared)} that Hallmark reads, "
                "but starts after the sidecar"
            )
    return problems


def _check_config(
    pod: Pod, sidecar: Dict[str, Any], volumes: Dict[str, Dict[str, Any]], config_maps: Dict[str, Dict[str, str]]
) -> List[str]:
    args = sidecar.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        return ["the sidecar's args name no --config file"]
    config_path = args[args.index("--config") + 1]
    mount = _mount_at(sidecar, _parent(config_path))
    config_map = volumes.get(mount["name"], {}).get("configMap") if mount else None
    if config_map is None:
        return [f"the configuration {config_path} is not on a ConfigMap volume"]
    data = config_maps.get(config_map["name"])
    if data is None:
        # The ConfigMap is created outside these manifests.
        return []
    key = config_path[len(mount["mountPath"].rstrip("/")) + 1 :]
    if key not in data:
        return [f"ConfigMap {config_map['name']} has no key {key}"]
    try:
        config = tomllib.loads(data[key])
    except tomllib.TOMLDecodeError as error:
        return [f"{key} in ConfigMap {config_map['name']} is not valid TOML: {error}"]

    problems = []
    hsm = config.get("hsm", {})
    if "module" not in hsm or not ({"token_label", "token_serial"} & hsm.keys()):
        problems.append(f"{key} lacks hsm.module, or both hsm.token_label and hsm.token_serial")
    user_ids = {
        container.get("securityContext", {}).get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
        for container in pod.get("containers", [])
    }
    for caller in config.get("callers", []):
        if "uid" in caller and caller["uid"] not in user_ids:
            problems.append(
                f"[[callers]] {caller.get('name')} has uid {caller['uid']}, but no app container runs as that user"
            )
    return problems

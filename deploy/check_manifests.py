#!/usr/bin/env python3
"""Checks that the proxy containers in Kubernetes manifests would start: deploy/validate.sh
runs it after the schema check.

    check_manifests.py PROXY_BINARY MANIFEST.yaml...

For every container whose image is `.../proxy:TAG` in a Pod, Deployment, DaemonSet,
StatefulSet, ReplicaSet, Job or CronJob:
  * runs `PROXY --check ARGS...` with the container's args (after `command`, when set, which
    must then be the proxy binary); a file argument under a ConfigMap volume mount is
    replaced by a temporary copy of the ConfigMap's key, so `run --config FILE` checks the
    file the Pod would read;
  * checks that the ports proxy listens on (PORT of `tcp`/`udp`/`tcp,udp`, the forwards'
    `listen` of a config file) are declared as containerPorts with their protocols;
  * checks that httpGet probes and the `prometheus.io/port` annotation point at the admin
    port (`--admin`, or `admin` in the config file).
Every ConfigMap key ending in `.toml` is checked on its own with `PROXY --check run --config`.
Every Service must select a workload in the manifests, and each of its targetPorts must be
a containerPort of it with the same protocol.

Exits 1 when a check fails, 2 on a manifest it cannot read. Needs PyYAML; tomllib
(Python 3.11) for the config file's ports (skipped without it).
"""

import os
import shlex
import subprocess
import sys
import tempfile

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11: the config's ports are not cross-checked
    tomllib = None

WORKLOADS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob"}
PROXY_PATHS = {"proxy", "/usr/local/bin/proxy"}

failures = []


def output_of(result, renames):
    """proxy's message, with temporary file names replaced by what they stand for."""
    text = (result.stderr + result.stdout).replace("\n\nFor more information, try '--help'.", "").strip()
    for local, name in renames.items():
        text = text.replace(local, name)
    return text


def fail(where, message):
    failures.append(f"{where}: {message}")
    print(f"  FAIL {where}: {message}")


def pod_template(doc):
    """(pod metadata, pod spec) of a workload."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind == "Pod":
        return doc.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec["template"]
    return template.get("metadata") or {}, template["spec"]


def is_proxy_image(image):
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return name == "proxy"


def parse_port(value):
    """PORT from `53`, `"53"`, `"IP:53"` or `"[::]:53"`."""
    text = str(value)
    return int(text.rsplit(":", 1)[-1]) if ":" in text else int(text)


def option(argv, name):
    """The value of `--name VALUE` or `--name=VALUE` in argv (the last one), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg[len(name) + 1 :]
    return found


class Container:
    def __init__(self, where, doc, meta, pod, container, configmaps, tmpdir):
        self.where = where
        self.namespace = (doc.get("metadata") or {}).get("namespace", "default")
        self.annotations = meta.get("annotations") or {}
        self.pod = pod
        self.c = container
        self.configmaps = configmaps
        self.tmpdir = tmpdir
        self.files = self.mounted_files()

    def mounted_files(self):
        """{path in the container: (configmap name, key)} for ConfigMap volume mounts."""
        volumes = {v["name"]: v for v in self.pod.get("volumes") or []}
        files = {}
        for mount in self.c.get("volumeMounts") or []:
            cm = (volumes.get(mount["name"]) or {}).get("configMap")
            if not cm:
                continue
            data = self.configmaps.get((self.namespace, cm["name"]))
            if data is None:
                if not cm.get("optional"):
                    fail(self.where, f"ConfigMap {cm['name']} is not in the manifests")
                continue
            # key -> file name inside the mount: `items` when given, else every key.
            names = {i["key"]: i["path"] for i in cm["items"]} if cm.get("items") else {k: k for k in data}
            base = mount["mountPath"].rstrip("/")
            for key, name in names.items():
                if mount.get("subPath"):
                    if name == mount["subPath"]:
                        files[base] = (cm["name"], key)
                else:
                    files[f"{base}/{name}"] = (cm["name"], key)
        return files

    def argv(self):
        command, args = self.c.get("command") or [], self.c.get("args") or []
        if command:
            if command[0] not in PROXY_PATHS:
                fail(self.where, f"command {command[0]!r} is not the proxy binary")
                return None
            argv = command[1:] + args
        else:
            argv = list(args)
        env = {e["name"]: e["value"] for e in self.c.get("env") or [] if "value" in e}
        for name, value in env.items():
            argv = [a.replace(f"$({name})", value) for a in argv]
        if any("$(" in a for a in argv):
            fail(self.where, f"args use an environment variable without a value: {argv}")
            return None
        return argv

    def local_copy(self, path):
        """A temporary file with the ConfigMap key mounted at `path`."""
        cm, key = self.files[path]
        data = self.configmaps[(self.namespace, cm)]
        if key not in data:
            fail(self.where, f"{path}: ConfigMap {cm} has no key {key!r}")
            return path
        fd, local = tempfile.mkstemp(dir=self.tmpdir, suffix="-" + os.path.basename(path))
        with os.fdopen(fd, "w") as f:
            f.write(data[key])
        return local

    def ports(self):
        """{(port, protocol)} and {name: port} of the container."""
        declared, names = set(), {}
        for p in self.c.get("ports") or []:
            declared.add((p["containerPort"], p.get("protocol", "TCP")))
            if "name" in p:
                names[p["name"]] = p["containerPort"]
        return declared, names

    def check(self, proxy):
        argv = self.argv()
        if argv is None:
            return
        local = [self.local_copy(a) if a in self.files else a for a in argv]
        renames = {copy: orig for orig, copy in zip(argv, local) if copy != orig}
        shown = shlex.join(["proxy", "--check", *argv])
        result = subprocess.run([proxy, "--check", *local], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            fail(self.where, f"`{shown}` exited {result.returncode}: {output_of(result, renames)}")
            return
        print(f"  ok   {self.where}: {shown}")
        self.check_ports(argv, local)

    def check_ports(self, argv, local):
        declared, names = self.ports()
        subcommand = argv[0] if argv else ""
        listens, admin = [], option(argv, "--admin")
        if subcommand in ("tcp", "udp", "tcp,udp", "udp,tcp") and option(argv, "--listen") is None:
            listens = [(int(argv[1]), proto.upper()) for proto in subcommand.split(",")]
        elif subcommand == "run" and tomllib is not None:
            config = option(local, "--config")
            with open(config, "rb") as f:
                parsed = tomllib.load(f)
            admin = admin or parsed.get("admin")
            for forward in parsed.get("forward", []):
                listen = forward.get("listen")
                for value in listen if isinstance(listen, list) else [listen]:
                    for proto in forward.get("protocol", "tcp").split(","):
                        listens.append((parse_port(value), proto.upper()))
        for port, proto in listens:
            if (port, proto) not in declared:
                fail(self.where, f"proxy listens on {port}/{proto}, not declared in ports")
        admin_port = parse_port(admin) if admin else None
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            http = (self.c.get(probe) or {}).get("httpGet")
            if not http:
                continue
            port = names.get(http["port"], http["port"])
            if admin_port is None:
                fail(self.where, f"{probe} uses httpGet but proxy has no --admin")
            elif port != admin_port:
                fail(self.where, f"{probe} port {http['port']} is not the admin port {admin_port}")
            else:
                print(f"  ok   {self.where}: {probe} {http.get('path', '/')} on the admin port {port}")
        scrape = self.annotations.get("prometheus.io/port")
        if scrape is not None and admin_port is not None and int(scrape) != admin_port:
            fail(self.where, f"prometheus.io/port {scrape} is not the admin port {admin_port}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    proxy, paths = sys.argv[1], sys.argv[2:]
    docs = []
    for path in paths:
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc:
                    name = (doc.get("metadata") or {}).get("name", f"#{i}")
                    docs.append((f"{os.path.basename(path)} {doc['kind']}/{name}", doc))
    configmaps = {
        ((d.get("metadata") or {}).get("namespace", "default"), d["metadata"]["name"]): d.get("data") or {}
        for _, d in docs
        if d["kind"] == "ConfigMap"
    }
    workloads = []  # (namespace, pod labels, {(port, protocol)}, {name: port}) per container
    with tempfile.TemporaryDirectory(prefix="proxy-manifests-") as tmpdir:
        for where, doc in docs:
            if doc["kind"] in WORKLOADS:
                meta, pod = pod_template(doc)
                for c in (pod.get("initContainers") or []) + pod["containers"]:
                    container = Container(f"{where} container {c['name']}", doc, meta, pod, c, configmaps, tmpdir)
                    declared, names = container.ports()
                    workloads.append((container.namespace, meta.get("labels") or {}, declared, names))
                    if is_proxy_image(c.get("image", "")):
                        container.check(proxy)
                    else:
                        print(f"  skip {where} container {c['name']}: image {c.get('image')} is not proxy")
            elif doc["kind"] == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if not key.endswith(".toml"):
                        continue
                    local = os.path.join(tmpdir, key)
                    with open(local, "w") as f:
                        f.write(text)
                    result = subprocess.run(
                        [proxy, "--check", "run", "--config", local], capture_output=True, text=True, timeout=30
                    )
                    if result.returncode != 0:
                        fail(f"{where} {key}", output_of(result, {local: key}))
                    else:
                        print(f"  ok   {where}: proxy --check run --config {key}")
    for where, doc in docs:
        if doc["kind"] != "Service":
            continue
        namespace = (doc.get("metadata") or {}).get("namespace", "default")
        selector = (doc.get("spec") or {}).get("selector") or {}
        selected = [
            w for w in workloads if w[0] == namespace and all(w[1].get(k) == v for k, v in selector.items())
        ]
        if not selector or not selected:
            fail(where, f"selects no workload in the manifests (selector {selector})")
            continue
        before = len(failures)
        for p in doc["spec"].get("ports") or []:
            target, proto = p.get("targetPort", p["port"]), p.get("protocol", "TCP")
            if not any((names.get(target, target), proto) in declared for _, _, declared, names in selected):
                fail(where, f"port {p['port']}/{proto}: targetPort {target} is no containerPort/{proto}")
        if len(failures) == before:
            print(f"  ok   {where}: every targetPort is a port of the selected containers")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

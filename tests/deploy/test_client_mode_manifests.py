"""deploy/kubernetes/client-mode agrees with itself, with the base it calls and with pyroguard.

The variant runs a legacy Pyro4 client with pyroguard in client mode beside it: the client speaks
plaintext to a Unix socket in a shared emptyDir, pyroguard carries the calls over mutual TLS to the
base variant's Service. The facts repeated across its files are checked here: the socket path (the
configuration's listen, the emptyDir's mount path, the client's INVENTORY_URI), socket_mode and
the group that makes it reachable, the Secret's file names against upstream_tls, the upstream
against the base's Service and the cert-manager certificate's names, the NetworkPolicy's ports
against the upstream and admin ports, the egress policy against the base's clients: rule.

`pyroguard check` resolves the upstream's host name when it loads the configuration, as
`pyroguard run` does; pyro-inventory.pyro.svc exists only inside the cluster, so the checks below
give pyroguard the ConfigMap's configuration with that one host name replaced by 127.0.0.1 (and,
for the run, the socket and admin addresses moved into the test's directory). Everything else is
the file as deployed.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_manifests import (K8S, SECRET_KEYS, Variant, check_config, host_of,
                            image_config_path, port_of)

sys.path.insert(0, str(ROOT / "tests" / "tools"))
import kubelet_volume  # noqa: E402

# The client certificate and the CA that signed the upstream's: what the Secret holds.
CLIENT_MINTED = {"tls.crt": "client.crt", "tls.key": "client.key", "ca.crt": "ca.crt"}
URI_ENV = "INVENTORY_URI"


class ClientModeVariant(Variant):
    """deploy/kubernetes/client-mode: pyroguard is a native sidecar (initContainers)."""

    def __init__(self):
        Variant.__init__(self, "client-mode")

    def containers(self):
        return self.pod.get("initContainers", []) + self.pod["containers"]

    def container(self, name):
        return next(c for c in self.containers() if c["name"] == name)

    @property
    def client(self):
        others = [c for c in self.containers() if c["name"] != "pyroguard"]
        assert len(others) == 1, others
        return others[0]

    @property
    def listener(self):
        listeners = self.config["listeners"]
        assert len(listeners) == 1
        return listeners[0]

    def volume(self, name):
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    def mount_of(self, container, volume_name):
        found = [m for m in container["volumeMounts"] if m["name"] == volume_name]
        assert len(found) == 1, (container["name"], volume_name)
        return found[0]


@pytest.fixture
def cm():
    return ClientModeVariant()


def upstream_resolvable_here(config_text):
    """The configuration with the upstream's host name replaced by 127.0.0.1 (only that)."""
    text, n = re.subn(r"^(\s+upstream: )pyro-inventory\.pyro\.svc(:\d+)$", r"\g<1>127.0.0.1\2",
                      config_text, flags=re.M)
    assert n == 1, "the upstream line was not found exactly once"
    return text


def socket_path(cm):
    listen = cm.listener["listen"]
    assert listen.startswith("unix:"), listen
    return listen[len("unix:"):]


# --- kustomize ---------------------------------------------------------------------------------


def test_kustomize_builds_the_client_mode_variant_with_the_selectors_it_means():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: the kustomize build of deploy/kubernetes/client-mode is "
                    "not checked (the other tests read the files directly)")
    r = subprocess.run([kubectl, "kustomize", str(K8S / "client-mode")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "NetworkPolicy"]
    by_kind = {d["kind"]: d for d in docs}
    dep, pol, cmap = by_kind["Deployment"], by_kind["NetworkPolicy"], by_kind["ConfigMap"]
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    projected = [s["configMap"]["name"] for v in pod["volumes"] if "projected" in v
                 for s in v["projected"]["sources"] if "configMap" in s]
    assert projected == [cmap["metadata"]["name"]]  # the generated, hash-suffixed name
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert pol["spec"]["podSelector"]["matchLabels"]
    # kustomize's includeSelectors would have rewritten the egress rule's podSelector with this
    # pod's labels; it must still select the base's server pods.
    base_labels = Variant("base").labels()
    to = pol["spec"]["egress"][0]["to"][0]
    assert to["podSelector"]["matchLabels"] == base_labels
    # pyroguard is a native sidecar: images: reaches it there too, and every image has a tag.
    init = pod["initContainers"]
    assert [(c["name"], c["restartPolicy"]) for c in init] == [("pyroguard", "Always")]
    for c in init + pod["containers"]:
        assert re.match(r"^[\w.\-/]+:[\w.\-]+$", c["image"]), c["image"]
    assert {d["metadata"]["namespace"] for d in docs} == {"billing"}


# --- the configuration -------------------------------------------------------------------------


def test_the_configuration_is_client_mode_only_and_pyroguard_check_accepts_it(
        cm, pyroguard_bin, certs, tmp_path):
    cfg = cm.config
    assert [l["mode"] for l in cfg["listeners"]] == ["client"]
    # tls: and clients: serve server-mode listeners only.
    assert "tls" not in cfg and "clients" not in cfg
    text = upstream_resolvable_here(cm.config_text)
    r = check_config(pyroguard_bin, text, certs, tmp_path, CLIENT_MINTED)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_socket_is_in_the_shared_emptydir_and_the_client_is_pointed_at_it(cm):
    path = socket_path(cm)
    vol_name = "pyroguard-run"
    vol = cm.volume(vol_name)
    assert vol["emptyDir"]["medium"] == "Memory"
    pg_mount = cm.mount_of(cm.container("pyroguard"), vol_name)
    client_mount = cm.mount_of(cm.client, vol_name)
    assert pg_mount["mountPath"] == client_mount["mountPath"] == os.path.dirname(path)
    assert not pg_mount.get("readOnly", False)  # pyroguard creates the socket there
    # connect() needs write permission on the socket, not a writable mount.
    assert client_mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in cm.client["env"]}
    uri = env[URI_ENV]
    assert uri == "PYRO:%s@./u:%s" % ("inventory", path)
    # The object the URI names is one the egress policy lets through.
    obj = re.match(r"^PYRO:([^@]+)@", uri).group(1)
    assert obj in {a["object"] for a in cm.listener["egress"]["allow"]}


def test_the_client_has_no_tls_settings_and_no_key(cm):
    names = [e["name"] for e in cm.client.get("env", [])]
    assert not [n for n in names if n.startswith("PYRO_SSL")], names
    # The certificate and its key are pyroguard's alone.
    assert "pyroguard" not in {m["name"] for m in cm.client["volumeMounts"]}


def test_socket_mode_lets_the_pod_group_in_and_no_one_else(cm):
    mode = cm.listener["socket_mode"]
    assert mode == "0660"
    assert int(mode, 8) & 0o007 == 0 and int(mode, 8) & 0o060 == 0o060
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    gid = int(user.group(2))
    psc = cm.pod["securityContext"]
    # The group the socket gets (the emptyDir's, through fsGroup and setgid; pyroguard's egid
    # too) is the pod's fsGroup, which every container of the pod has among its groups.
    assert psc["fsGroup"] == gid
    pg = cm.container("pyroguard")["securityContext"]
    assert pg.get("runAsGroup", psc.get("runAsGroup")) == gid


def test_the_secret_files_are_where_upstream_tls_reads_them(cm):
    mount, sources = cm.projected_sources
    assert mount["mountPath"] == str(Path(image_config_path()).parent)
    assert mount["readOnly"] is True and "subPath" not in mount
    secret = next(s["secret"] for s in sources if "secret" in s)
    items = {i["key"]: i["path"] for i in secret["items"]}
    assert set(items) == SECRET_KEYS
    up = cm.listener["upstream_tls"]
    assert (items["tls.crt"], items["tls.key"], items["ca.crt"]) == (up["cert"], up["key"],
                                                                     up["ca"])
    assert cm.config["reload"]["watch"] is True


def test_the_upstream_is_the_base_service_under_the_name_its_certificate_carries(cm):
    base = Variant("base")
    svc = base.one("Service")
    overlay = Variant("cert-manager")
    namespace = overlay.kustomization["namespace"]
    upstream = cm.listener["upstream"]
    assert host_of(upstream) == "%s.%s.svc" % (svc["metadata"]["name"], namespace)
    assert port_of(upstream) == svc["spec"]["ports"][0]["port"]
    server_name = cm.listener["upstream_tls"]["server_name"]
    assert server_name == host_of(upstream)
    assert server_name in overlay.one("Certificate")["spec"]["dnsNames"]


def test_the_egress_policy_asks_only_what_the_base_grants_this_namespace(cm):
    """The client's namespace fits the base's billing rule (a SPIFFE ID under /ns/<namespace>/),
    and every object and method the egress policy lets out is one that rule allows."""
    base_cfg = Variant("base").config
    namespace = cm.kustomization["namespace"]
    rule = next(c for c in base_cfg["clients"] if c["name"] == namespace)
    assert fnmatchcase("spiffe://cluster.local/ns/%s/sa/inventory-client" % namespace,
                       rule["match"]["uri"].replace("**", "*"))
    granted = {a["object"]: a["methods"] for a in rule["allow"]}
    for entry in cm.listener["egress"]["allow"]:
        assert entry["object"] in granted, entry
        for method in entry["methods"]:
            assert any(fnmatchcase(method, g) for g in granted[entry["object"]]), method


def test_the_network_policy_lets_out_only_the_upstream_and_dns_and_in_only_monitoring(cm):
    pol = cm.one("NetworkPolicy")["spec"]
    assert sorted(pol["policyTypes"]) == ["Egress", "Ingress"]
    assert pol["podSelector"]["matchLabels"] == cm.labels()
    assert cm.deployment["spec"]["selector"]["matchLabels"] == cm.labels()
    admin = port_of(cm.config["admin"]["listen"])
    assert pol["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"port": admin, "protocol": "TCP"}]}]
    upstream_rule, dns_rule = pol["egress"]
    # The upstream: the base's pods in the upstream's namespace, on the upstream's port (which is
    # also the pods' pyro-tls port: a policy sees the port after the Service's translation).
    upstream = cm.listener["upstream"]
    base = Variant("base")
    pods_port = next(p["containerPort"] for p in base.container("pyroguard")["ports"]
                     if p["name"] == "pyro-tls")
    assert upstream_rule["ports"] == [{"port": port_of(upstream), "protocol": "TCP"}]
    assert port_of(upstream) == pods_port
    (to,) = upstream_rule["to"]
    assert to["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": host_of(upstream).split(".")[1]}
    assert to["podSelector"]["matchLabels"] == base.labels()
    # DNS, both transports: the upstream's name is resolved at each (re)load.
    assert sorted((p["port"], p["protocol"]) for p in dns_rule["ports"]) == [(53, "TCP"),
                                                                            (53, "UDP")]


def test_probes_ask_the_admin_endpoint_of_the_configuration(cm):
    admin = cm.config["admin"]
    assert host_of(admin["listen"]) == "0.0.0.0" and admin["allow_remote"] is True
    pg = cm.container("pyroguard")
    assert {p["name"]: p["containerPort"] for p in pg["ports"]} == {
        "admin": port_of(admin["listen"])}
    want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in want.items():
        get = pg[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "admin"), probe


def test_every_container_runs_locked_down_with_requests_and_limits(cm):
    pod = cm.pod
    assert pod["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert (psc["runAsUser"], psc["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))
    pg = cm.container("pyroguard")
    assert pg["restartPolicy"] == "Always"  # a native sidecar: up before, down after the client
    assert (pg["securityContext"]["runAsUser"], pg["securityContext"]["runAsGroup"]) == (
        int(user.group(1)), int(user.group(2)))
    for c in cm.containers():
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
    cfg = cm.config
    assert cfg["limits"]["drain_timeout"] / 1000.0 < pod["terminationGracePeriodSeconds"]
    assert cfg["workers"] <= float(pg["resources"]["limits"]["cpu"])


# --- the real binary with the deployed configuration ------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, what, proc, log, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail("%s (pyroguard rc %s); log:\n%s" % (what, proc.poll(), log.read_text()[-3000:]))


def test_pyroguard_serves_the_socket_with_its_mode_and_the_directorys_group(
        cm, pyroguard_bin, certs, tmp_path):
    """`pyroguard run` on the deployed configuration, in the kubelet's layout of the projected
    volume: the socket gets socket_mode and the group of its setgid directory (what kubelet makes
    of an emptyDir with fsGroup), /readyz answers once it listens, and a Secret renewed by a
    `..data` swap is followed by a reload. Stand-ins: the upstream's host is 127.0.0.1 (nothing
    listens there; the socket is not dialled), the socket's directory is under tmp_path and the
    admin endpoint on a free loopback port."""
    run_dir = tmp_path / "run-pyroguard"
    run_dir.mkdir()
    # As kubelet leaves an emptyDir with fsGroup: the group, g+rwx and setgid. As root, a group
    # that pyroguard's own (egid 0) is not, so the socket's group can only come from setgid.
    group = 65532 if os.geteuid() == 0 else os.getegid()
    os.chown(run_dir, -1, group)
    os.chmod(run_dir, 0o2770)
    sock = run_dir / "inventory.sock"
    admin = free_port()
    text = upstream_resolvable_here(cm.config_text)
    text = text.replace("unix:%s" % socket_path(cm), "unix:%s" % sock)
    text = text.replace(cm.config["admin"]["listen"], "127.0.0.1:%d" % admin)
    text = re.sub(r"poll_interval: \d+", "poll_interval: 200", text)
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyroguard.yaml").write_text(text)
    volume = tmp_path / "etc-pyroguard"
    files = {"pyroguard.yaml": src / "pyroguard.yaml"}
    files.update({"tls/" + k: certs / v for k, v in CLIENT_MINTED.items()})
    kubelet_volume.publish(volume, files, 1)

    log = tmp_path / "pyroguard.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(pyroguard_bin), "run", "-c", str(volume / "pyroguard.yaml")],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, "no socket at %s" % sock, proc, log)
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == int(cm.listener["socket_mode"], 8), oct(st.st_mode)
        assert st.st_gid == group, (st.st_gid, group)

        def ready():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % admin, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, "/readyz did not answer 200", proc, log)

        # cert-manager renews the Secret: kubelet publishes the whole volume anew (another client
        # certificate here), which changes pyroguard.yaml's inode under the watch too.
        files.update({"tls/tls.crt": certs / "reader.crt", "tls/tls.key": certs / "reader.key"})
        kubelet_volume.publish(volume, files, 2)
        wait_for(lambda: '"reloaded"' in log.read_text(), "no reload after the ..data swap",
                 proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=40)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not sock.exists()

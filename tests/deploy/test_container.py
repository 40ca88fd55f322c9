"""The container image, compose and the Kubernetes pod, built and run here with podman.

Behind a switch: these tests need root, podman, buildah, debootstrap and a few minutes, so they
run only with PYROGUARD_TEST_CONTAINER set (`make test-container` sets it and installs the
packages; `.ci/run` runs it with PYROGUARD_TEST_CONTAINER=require, where a missing podman is a
failure instead of a skip).

1. deploy/container/test-image.sh: the debootstrap base, the Dockerfile built with --pull=never
   and chroot isolation, and a real Pyro4 mutual-TLS call through the container (plus refusals, a
   rotation and a drain; the script exits non-zero on any difference).
2. deploy/compose/compose.yaml run by podman-compose: a real call through the published port,
   the legacy server's port bound to loopback inside the shared namespace and published nowhere.
3. deploy/kubernetes/base and name-server run by `podman kube play`: real calls through the pod,
   the probes' paths answered on the probes' ports, the URIs the server hands out naming the
   Service, a certificate rotation in a kubelet-style volume.

What stands in for what a real cluster would do, and why:
- podman-compose 1.0.3 (Debian 12) passes `network_mode: "service:NAME"` through unchanged, which
  podman does not understand; tests/deploy/podman-shim.sh translates that one argument to
  podman's `container:` spelling.
- podman kube play (4.3) supports HostPath, ConfigMap, EmptyDir and PVC volumes only, does not
  set fieldRef environment variables and reaches pods from the host through hostPort. The test
  therefore (a) writes the projected volume's files itself, laid out as kubelet does
  (tests/tools/kubelet_volume.py), and mounts that directory with hostPath; (b) sets
  POD_NAMESPACE to the namespace a cluster would and expands the $(VAR) references in env
  values as kubelet does; (c) adds hostPort to the declared ports; (d) runs one replica. Its probes are not run by podman (it turns them into curl healthchecks
  on port 0): the test asks each probe's path on each probe's port itself.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import DEPLOY, ROOT

sys.path.insert(0, str(ROOT / "tests" / "tools"))
import kubelet_volume  # noqa: E402

SWITCH = os.environ.get("PYROGUARD_TEST_CONTAINER", "")
PY = "/usr/bin/python3"

if not SWITCH:
    pytest.skip("container tests are behind a switch: run `make test-container` (root, podman, "
                "buildah, debootstrap; PYROGUARD_TEST_CONTAINER=1)", allow_module_level=True)
_missing = [t for t in ("podman", "debootstrap", "podman-compose") if shutil.which(t) is None]
if _missing or os.geteuid() != 0:
    why = ("not root" if os.geteuid() != 0 else
           "%s not found: apt-get install podman buildah debootstrap runc catatonit "
           "podman-compose" % ", ".join(_missing))
    if SWITCH == "require":
        pytest.fail("PYROGUARD_TEST_CONTAINER=require but " + why, pytrace=False)
    pytest.skip("container tests skipped: " + why, allow_module_level=True)

VERSION = next(line.split()[2] for line in (ROOT / "CMakeLists.txt").read_text().splitlines()
               if line.startswith("project(pyroguard VERSION"))
IMAGE = "localhost/pyroguard:%s" % VERSION
LEGACY_IMAGE = "localhost/pyroguard-demo-legacy:%s" % VERSION
CACHE = ROOT / "build" / "container"


def run(cmd, env=None, timeout=900, check=True, **kw):
    r = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        pytest.fail("%s exited %d\n%s\n%s" % (" ".join(map(str, cmd)), r.returncode,
                                              r.stdout[-4000:], r.stderr[-4000:]), pytrace=False)
    return r


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(cond, secs, what):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail("timed out waiting for " + what, pytrace=False)


def require_free(*ports):
    busy = [p for p in ports if port_open(p)]
    if busy:
        pytest.fail("127.0.0.1 ports %s are in use; the containers publish them" % busy)


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory):
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    run(["bash", str(DEPLOY / "container" / "podman-conf.sh"), str(conf)])
    return dict(os.environ, CONTAINERS_CONF=str(conf))


@pytest.fixture(scope="module")
def images(podman_env):
    """The base, the pyroguard image and the demo server image (cached layers after the first)."""
    run(["bash", str(DEPLOY / "container" / "base-image.sh"), str(CACHE)], env=podman_env)
    build = ["podman", "build", "--pull=never", "--isolation=chroot", "--network=host", "-q"]
    run(build + ["--build-arg", "VERSION=" + VERSION, "-t", IMAGE, "-f", str(ROOT / "Dockerfile"),
                 str(ROOT)], env=podman_env)
    run(build + ["-t", LEGACY_IMAGE, str(DEPLOY / "demo")], env=podman_env)
    return podman_env


def pyro_client(certs, mode, cert, port=9443):
    """deploy/demo/client.py: 'OK: ...' (exit 0) or 'REFUSED: ...' (exit 3)."""
    r = subprocess.run([PY, str(DEPLOY / "demo" / "client.py"), mode, "--certs", str(certs),
                        "--cert", cert, "--port", str(port), "--marker", "/nonexistent/x"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip() + r.stderr.strip()


def served_serial(certs, port=9443):
    import ssl
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return int(t.getpeercert()["serialNumber"], 16)


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  % path.encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1].decode()


def mint_server_cert(certs, out):
    """A renewed server certificate: new key and serial, same CA and names."""
    out.mkdir(parents=True, exist_ok=True)
    key, csr, crt, ext = (out / n for n in ("tls.key", "tls.csr", "tls.crt", "ext"))
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
    run(["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=localhost", "-out", str(csr)])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(certs / "ca.crt"), "-CAkey",
         str(certs / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile",
         str(ext)])
    return crt, key


def readable_by_the_containers(path):
    """Owned by root, group 65532 (the image's group, the pod's fsGroup), 0750/0640."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, 0, 65532)
        os.chmod(dirpath, 0o750)
        for f in filenames:
            os.lchown(os.path.join(dirpath, f), 0, 65532)
            os.chmod(os.path.join(dirpath, f), 0o640)
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                os.lchown(os.path.join(dirpath, d), 0, 65532)


def listening_sockets(env, container):
    """(address, port) of every listening IPv4 TCP socket in a container's network namespace."""
    out = run(["podman", "exec", container, "cat", "/proc/net/tcp"], env=env).stdout
    found = set()
    for line in out.splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            addr, port = local.split(":")
            found.add((socket.inet_ntoa(bytes.fromhex(addr)[::-1]), int(port, 16)))
    return found


# --- 1. the image ------------------------------------------------------------------------------


def test_the_image_builds_without_a_docker_engine_and_serves_a_real_pyro4_mtls_call(podman_env):
    require_free(9090, 9443, 9901)
    r = run(["bash", str(DEPLOY / "container" / "test-image.sh")], env=podman_env, check=False,
            timeout=1800)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]
    assert "== PASS: %s" % IMAGE in r.stdout


# --- 2. compose --------------------------------------------------------------------------------


def test_compose_runs_the_sidecar_and_only_the_tls_port_is_reachable(images, certs, tmp_path):
    env = images
    require_free(9443)
    work = tmp_path / "compose"
    work.mkdir()
    for f in ("compose.yaml", "pyroguard.yaml"):
        shutil.copy(DEPLOY / "compose" / f, work / f)
    (work / "tls").mkdir()
    for dst, src in (("tls.crt", "server.crt"), ("tls.key", "server.key"), ("ca.crt", "ca.crt")):
        shutil.copy(certs / src, work / "tls" / dst)
    readable_by_the_containers(work / "tls")
    os.chmod(work / "pyroguard.yaml", 0o644)
    compose = ["podman-compose", "--podman-path", str(ROOT / "tests" / "deploy" / "podman-shim.sh"),
               "-p", "pgtest"]
    try:
        run(compose + ["up", "-d", "--no-build"], env=env, cwd=work)
        wait_until(lambda: "READY" in run(["podman", "logs", "pgtest_legacy_1"], env=env,
                                          check=False).stdout, 30, "the legacy server")
        rc, out = pyro_client(certs, "list", "client")
        assert rc == 0 and "get_stock('widget') -> 12" in out, out
        rc, out = pyro_client(certs, "add", "client")
        assert rc == 3 and "'add_stock' of object 'inventory' is not allowed" in out, out
        rc, out = pyro_client(certs, "pickle", "client")
        assert rc == 3 and "serializer pickle (id 4) is not allowed" in out, out
        # Published: the TLS port only. Inside the shared namespace the server is on loopback.
        ports = run(["podman", "port", "pgtest_pyroguard_1"], env=env).stdout.split("\n")
        assert [p for p in ports if p] == ["9443/tcp -> 0.0.0.0:9443"]
        listening = listening_sockets(env, "pgtest_legacy_1")
        assert ("127.0.0.1", 9090) in listening and ("0.0.0.0", 9090) not in listening
        assert ("127.0.0.1", 9901) in listening  # admin, inside only
        assert not port_open(9090)
        # The legacy server hands out URIs that point at pyroguard (NATHOST/NATPORT).
        legacy_log = run(["podman", "logs", "pgtest_legacy_1"], env=env).stdout
        assert "PYRO:inventory@localhost:9443" in legacy_log, legacy_log
    finally:
        subprocess.run(compose + ["down"], env=env, cwd=work, capture_output=True, timeout=120)
        subprocess.run(["podman", "network", "rm", "-f", "pgtest_default"], env=env,
                       capture_output=True, timeout=60)


# --- 3. Kubernetes with podman kube play --------------------------------------------------------


def render(variant):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: cannot build deploy/kubernetes/%s with kustomize" % variant)
    return [d for d in yaml.safe_load_all(run([kubectl, "kustomize",
                                                str(DEPLOY / "kubernetes" / variant)]).stdout) if d]


def as_podman_pod(docs, volume_dir, namespace):
    """The Deployment with the stand-ins the module docstring lists, and the ConfigMap's text."""
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    dep["spec"]["replicas"] = 1
    files = {}
    for v in spec["volumes"]:
        if "projected" in v:
            for src in v["projected"]["sources"]:
                if "configMap" in src:
                    for item in src["configMap"]["items"]:
                        files[item["path"]] = config_maps[src["configMap"]["name"]][item["key"]]
                else:
                    for item in src["secret"]["items"]:
                        files[item["path"]] = ("secret", item["key"])
            del v["projected"]
            v["hostPath"] = {"path": str(volume_dir), "type": "Directory"}
    for c in spec["containers"]:
        for p in c.get("ports", []):
            p["hostPort"] = p["containerPort"]
        seen = {}
        for e in c.get("env", []):
            if "valueFrom" in e:
                assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
                del e["valueFrom"]
                e["value"] = namespace
            # $(VAR) of an earlier variable, expanded as kubelet does (podman does not).
            e["value"] = re.sub(r"\$\((\w+)\)", lambda m: seen.get(m.group(1), m.group(0)),
                                e["value"])
            seen[e["name"]] = e["value"]
    return dep, files


def publish_volume(volume_dir, files, secret, version, scratch):
    """Write the projected volume as kubelet would; secret: {key: source file}."""
    sources = {}
    for path, content in files.items():
        if isinstance(content, tuple):
            sources[path] = secret[content[1]]
        else:
            f = scratch / ("cm-%d-%s" % (version, Path(path).name))
            f.write_text(content)
            sources[path] = f
    kubelet_volume.publish(volume_dir, sources, version)
    readable_by_the_containers(volume_dir)


@pytest.fixture
def kube_play(images, tmp_path):
    env = images
    played = []

    def play(dep):
        manifest = tmp_path / ("%s.yaml" % dep["metadata"]["name"])
        manifest.write_text(yaml.safe_dump(dep))
        played.append(manifest)
        run(["podman", "kube", "play", str(manifest)], env=env, timeout=300)
        return "%s-pod-0" % dep["metadata"]["name"]

    yield play
    for manifest in played:
        subprocess.run(["podman", "kube", "down", str(manifest)], env=env, capture_output=True,
                       timeout=120)


def assert_probes_answer(dep, expect_ready=True):
    pg = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "pyroguard")
    ports = {p["name"]: p["hostPort"] for p in pg["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = pg[probe]["httpGet"]
        status, body = http_get(ports[get["port"]], get["path"])
        assert status == 200, (probe, status, body)


def test_the_kubernetes_pod_serves_calls_answers_its_probes_and_picks_up_a_renewed_certificate(
        kube_play, images, certs, tmp_path):
    env = images
    require_free(9443, 9901)
    dep, files = as_podman_pod(render("base"), tmp_path / "etc-pyroguard", "pyro")
    secret = {"tls.crt": certs / "server.crt", "tls.key": certs / "server.key",
              "ca.crt": certs / "ca.crt"}
    publish_volume(tmp_path / "etc-pyroguard", files, secret, 1, tmp_path)
    pod = kube_play(dep)
    wait_until(lambda: port_open(9443) and port_open(9901), 30, "pyroguard in the pod")
    wait_until(lambda: http_get(9901, "/readyz")[0] == 200, 30, "/readyz (the server is up)")
    assert_probes_answer(dep)

    # The base policy: OU ops may call everything; a certificate matching no rule is refused.
    rc, out = pyro_client(certs, "list", "admin")
    assert rc == 0 and "get_stock('widget') -> 12" in out, out
    rc, out = pyro_client(certs, "list", "client")
    assert rc == 3 and "no client rule matches the certificate" in out, out
    legacy_log = run(["podman", "logs", pod + "-legacy"], env=env).stdout
    assert "PYRO:inventory@pyro-inventory.pyro.svc:9443" in legacy_log, legacy_log

    # cert-manager renews the Secret: kubelet swaps ..data, pyroguard serves the new certificate.
    before = served_serial(certs)
    crt, key = mint_server_cert(certs, tmp_path / "renewed")
    publish_volume(tmp_path / "etc-pyroguard", files, dict(secret, **{"tls.crt": crt,
                                                                     "tls.key": key}), 2, tmp_path)
    want = int(run(["openssl", "x509", "-in", str(crt), "-noout", "-serial"]).stdout
               .strip().split("=")[1], 16)
    wait_until(lambda: served_serial(certs) == want, 30, "the renewed certificate")
    assert want != before
    rc, out = pyro_client(certs, "list", "admin")
    assert rc == 0, out
    logs = run(["podman", "logs", pod + "-pyroguard"], env=env).stderr
    assert '"event":"reloaded","trigger":"watch"' in logs


NS_CLIENT = textwrap.dedent("""
    import sys
    import Pyro4, Pyro4.errors
    certs = sys.argv[1]
    Pyro4.config.SSL = True
    Pyro4.config.SSL_CACERTS = certs + "/ca.crt"
    Pyro4.config.SSL_CLIENTCERT = certs + "/client.crt"
    Pyro4.config.SSL_CLIENTKEY = certs + "/client.key"
    Pyro4.config.COMMTIMEOUT = 10.0
    ns = Pyro4.locateNS(host="localhost", port=9090)
    print("lookup:", ns.lookup("Pyro.NameServer"))
    try:
        ns.register("evil.service", "PYRO:obj@attacker.example:1")
        print("register: allowed")
    except Pyro4.errors.SecurityError as e:
        print("register: SecurityError:", e)
    print("list:", sorted(ns.list()))
""")


def test_the_name_server_pod_lets_clients_look_up_and_only_registrars_register(
        kube_play, certs, tmp_path):
    require_free(9090, 9901)
    dep, files = as_podman_pod(render("name-server"), tmp_path / "etc-pyroguard", "pyro")
    secret = {"tls.crt": certs / "server.crt", "tls.key": certs / "server.key",
              "ca.crt": certs / "ca.crt"}
    publish_volume(tmp_path / "etc-pyroguard", files, secret, 1, tmp_path)
    kube_play(dep)
    wait_until(lambda: port_open(9901) and http_get(9901, "/readyz")[0] == 200, 30,
               "/readyz of the name server's pyroguard")
    assert_probes_answer(dep)
    r = run([PY, "-c", NS_CLIENT, str(certs)], timeout=60)
    lines = r.stdout.splitlines()
    # The name server's own URI names the Service (PYRO_NATHOST/NATPORT), not 127.0.0.1:19090.
    assert lines[0] == "lookup: PYRO:Pyro.NameServer@pyro-ns.pyro.svc:9090", r.stdout
    assert lines[1].startswith(
        "register: SecurityError: pyroguard: method 'register' of object 'Pyro.NameServer' is "
        "not allowed for client rule 'everyone'"), r.stdout
    assert lines[2] == "list: ['Pyro.NameServer']", r.stdout

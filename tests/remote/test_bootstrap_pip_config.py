"""A host with its own CA and its own package index: the real bootstrap, over a real
sshd, installs the framework from the index the host's pip.conf names, trusting the CA
bundle that pip.conf's `cert =` names, although the ssh session has no SSL_CERT_FILE.

Everything is on 127.0.0.1: a CA made here with openssl, a PEP 503 index served over
HTTPS with a certificate from that CA. The "framework" is a stand-in made by the test:
a tiny pure-Python wheel called torch 0.0.1 (the step installs and imports `torch`),
because the test is about where the package comes from, not about torch. uv itself is
installed by the bootstrap as on any host (pip install uv).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import ssl
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from gpubox.remote.ssh import SshRunner

pytestmark = [pytest.mark.sshd, pytest.mark.slow]
SCRIPT = Path(__file__).parents[2] / "src/gpubox/remote/scripts/bootstrap.sh"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA of the test's own and a cert for 127.0.0.1."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
            "-subj", "/CN=gpubox test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of one module, `name`, whose __version__ is `version`."""
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gpubox-test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        lines.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[record] = "\n".join([*lines, f"{record},,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


class _Handler(http.server.SimpleHTTPRequestHandler):
    requested: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        _Handler.requested.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def https_index(root: Path, cert: Path, key: Path):
    """A PEP 503 simple index of `root`'s wheels over HTTPS on 127.0.0.1; yields its URL."""
    simple = root / "simple"
    for wheel in root.glob("*.whl"):
        project = simple / wheel.name.split("-")[0]
        project.mkdir(parents=True, exist_ok=True)
        (project / "index.html").write_text(f'<a href="../../{wheel.name}">{wheel.name}</a>\n')
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


def test_framework_step_uses_the_hosts_pip_index_and_its_ca_bundle(
    sshd_factory, settings, tmp_path
):
    if not SYSTEM_BUNDLE.is_file():
        pytest.skip("needs the system CA bundle (to install uv as any host does)")
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    make_wheel(site, "torch", "0.0.1")
    far_home = tmp_path / "far-home"
    # The CA is only in the bundle pip.conf names (with the system's CAs, as a company's
    # bundle would have); the session has no SSL_CERT_FILE, PIP_* or UV_* variable.
    bundle = tmp_path / "company-bundle.pem"
    bundle.write_text(SYSTEM_BUNDLE.read_text() + ca.read_text())
    server = sshd_factory(session_env={"HOME": str(far_home), "UV_CACHE_DIR": str(tmp_path / "uv-cache")})
    with https_index(site, cert, key) as index_url:
        (far_home / ".config/pip").mkdir(parents=True)
        (far_home / ".config/pip/pip.conf").write_text(
            f"[global]\nextra-index-url = {index_url}\ncert = {bundle}\n"
        )
        runner = SshRunner(server.endpoint(), settings, "ca1")
        try:
            assert runner.run("echo ${SSL_CERT_FILE:-none} ${PIP_CERT:-none}").stdout.split() == ["none", "none"]
            runner.put(SCRIPT, "~/bootstrap.sh")
            env = {"GPUBOX_FRAMEWORK": "pytorch", "GPUBOX_FRAMEWORK_TAG": "cpu",
                   "GPUBOX_FRAMEWORK_PACKAGES": "torch==0.0.1", "GPUBOX_INSTALL_DRIVER": "0"}  # fmt: skip
            done = runner.run("bash ~/bootstrap.sh step python framework", env=env,
                              check=False, timeout=600)  # fmt: skip
            log = runner.run("cat ~/.gpubox/logs/framework.log ~/.gpubox/logs/python.log", check=False).stdout
            assert "step=framework status=done" in done.stdout, done.stdout + log
            assert "uv pip install" in log, log  # uv, not the pip fallback, installed it
            version = runner.run('~/.gpubox/venv/bin/python -c "import torch; print(torch.__version__)"')
            assert version.stdout.strip() == "0.0.1"
        finally:
            runner.close()
    assert any(p.endswith("torch-0.0.1-py3-none-any.whl") for p in _Handler.requested)

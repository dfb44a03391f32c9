"""A mesh's certificates for the end-to-end tests: a CA, the broker side's server certificate and
client certificates whose URI SAN is a SPIFFE id, as Istio's CA issues them (made with openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path

# Two workloads in two namespaces, as the shipped tenants and ACL manifests name them.
SPIFFE = {"team-a": "spiffe://cluster.local/ns/team-a/sa/app",
          "team-b": "spiffe://cluster.local/ns/team-b/sa/app"}


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


def issue(cwd: Path, name: str, subject: str, ext: str) -> None:
    """A key and a certificate for `name`, signed by the test CA, with the extensions in `ext`."""
    (cwd / f"{name}.ext").write_text(ext)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject,
            "-out", f"{name}.csr", cwd=cwd)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=cwd)


def issue_workload(cwd: Path, name: str, spiffe_id: str) -> None:
    """A client certificate for a workload with this SPIFFE id."""
    issue(cwd, name, f"/CN={name}", f"subjectAltName=URI:{spiffe_id}\nextendedKeyUsage=clientAuth\n")


def make_pki(d: Path, workloads: dict[str, str]) -> Path:
    """In d: ca.pem/key, server.pem/key (127.0.0.1, localhost) and <name>.pem/key for each
    workload name -> SPIFFE id."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=e2e mesh CA",
            "-days", "2", "-out", "ca.pem", cwd=d)
    issue(d, "server", "/CN=kafka-broker", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, spiffe_id in workloads.items():
        issue_workload(d, name, spiffe_id)
    return d

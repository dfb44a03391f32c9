#!/usr/bin/env python3
"""Package the built filter as an OCI image that Istio's agent pulls for a WasmPlugin, into an OCI
image layout directory, without a container engine. Prints the manifest digest.

    istio/build_oci.py <module.wasm> <layout dir> [tag]

The format: an OCI image (manifest `application/vnd.oci.image.manifest.v1+json`) with one layer,
a gzip tar holding the module as `plugin.wasm` at its root: what Istio's agent reads from a
"compat" Wasm image (it also reads the Wasm OCI artifact, whose layer is the bare module). This
one is chosen because every registry and every OCI tool (skopeo, crane, umoci, oras) handles a
plain image; the artifact's media types are still refused by some registries.

The bytes are reproducible: the tar entry and the gzip header carry no time, owner or name, so the
same module always gives the same digests.

Push it with a standard tool, e.g.:

    skopeo copy oci:target/oci/kafka-filter:0.1.0 docker://registry.example.com/kafka-filter:0.1.0
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def layer_tar(module: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        info.mode = 0o444
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as f:
        f.write(data)
    return out.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def build(module_path: Path, layout: Path, tag: str) -> str:
    module = module_path.read_bytes()
    if module[:4] != b"\0asm":
        raise SystemExit(f"{module_path} is not a wasm module")
    tar = layer_tar(module)
    layer = gz(tar)
    config = canonical({
        # What `docker build` of `FROM scratch` + the module gives (the platform is nominal: the
        # agent takes the layer as it is); tools such as umoci refuse an OS they do not know.
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"org.opencontainers.image.title": "kafka-filter"}},
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
    })
    manifest = canonical({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest(layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
    })
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        (blobs / digest(blob).split(":", 1)[1]).write_bytes(blob)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = layout / "index.json"
    entry = {"mediaType": MANIFEST_TYPE, "digest": digest(manifest), "size": len(manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    # Other tags in the layout stay; this one points at the new manifest.
    manifests = []
    if index_path.exists():
        manifests = [m for m in json.loads(index_path.read_text()).get("manifests", [])
                     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests + [entry]}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return digest(manifest)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    tag = argv[3] if len(argv) == 4 else "latest"
    d = build(Path(argv[1]), Path(argv[2]), tag)
    print(f"{argv[2]}:{tag} {d}")
    # Istio's agent checks `sha256` against the image manifest's digest for oci://, against the
    # module for http(s)://; the WasmPlugin schema wants the bare hex either way.
    print(f"  WasmPlugin sha256 for url oci://...:{tag} (the manifest digest): {d.split(':', 1)[1]}")
    print(f"  WasmPlugin sha256 for an http(s):// url (the module's): "
          f"{hashlib.sha256(Path(argv[1]).read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Pack root-filesystem tarballs into an OCI image layout tar that `ctr images import` accepts.

    ocipack.py --out IMG.tar --name localhost/dranet:dev --dockerfile deploy/Dockerfile \
               --cached-layer base.tar --cached-layer deps.tar --layer app.tar --blob-cache DIR

Each layer is an uncompressed tar of paths relative to / (lowest first; later layers add or replace
files, no whiteouts). Layers are gzipped with mtime 0; a --cached-layer's blob is kept in
--blob-cache by the layer's digest, so an unchanged base is never compressed twice. The image
config (Env, Entrypoint, Cmd, WorkingDir) is read from the Dockerfile's final stage: one place
says how the image runs, for both builds. The index names the image (io.containerd.image.name).
Standard library only: make image runs this with any python3.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def dockerfile_config(path: Path) -> dict[str, Any]:
    """ENV, ENTRYPOINT, CMD and WORKDIR of the final stage, as an OCI image config's `config`.
    Only the forms the project uses: `ENV K=V ...`, exec-form JSON lists; anything else is refused."""
    lines = dockerfile_instructions(path)
    final = max(i for i, (word, _) in enumerate(lines) if word == "FROM")
    cfg: dict[str, Any] = {"Env": [], "WorkingDir": "/"}
    for word, rest in lines[final + 1 :]:
        if word == "ENV":
            for item in shlex.split(rest):
                if "=" not in item or "$" in item:
                    raise ValueError(f"{path}: ENV {item!r}: only literal K=V pairs are supported")
                cfg["Env"].append(item)
        elif word in ("ENTRYPOINT", "CMD"):
            value = json.loads(rest)
            if not isinstance(value, list):
                raise ValueError(f"{path}: {word} must be the exec form (a JSON list)")
            cfg[word.capitalize()] = value
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif word == "USER":
            cfg["User"] = rest
    return cfg


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return "sha256:" + h.hexdigest()


def _gzip(src: Path, dst: Path) -> str:
    """Compress src into dst (mtime 0, reproducible); returns the digest of the compressed bytes."""
    with src.open("rb") as fi, dst.open("wb") as fo:
        with gzip.GzipFile(fileobj=fo, mode="wb", compresslevel=6, mtime=0) as g:
            while b := fi.read(CHUNK):
                g.write(b)
    return _sha256_file(dst)


def layer_blob(path: Path, cache: Path | None, tmp: Path) -> tuple[str, str, Path]:
    """(diff_id, digest, compressed blob) of one layer tar, from the cache when it was packed before."""
    diff_id = _sha256_file(path)
    where = cache or tmp
    meta = where / f"{diff_id[7:]}.json"
    if cache and meta.exists():
        m = json.loads(meta.read_text())
        if Path(m["blob"]).exists():
            return diff_id, m["digest"], Path(m["blob"])
    blob = where / f"{diff_id[7:]}.gz"
    digest = _gzip(path, blob)
    meta.write_text(json.dumps({"digest": digest, "blob": str(blob)}))
    return diff_id, digest, blob


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tf.addfile(info, io.BytesIO(data))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pack(out: Path, name: str, layers: list[tuple[Path, bool]], config: dict[str, Any],
         cache: Path | None) -> dict[str, Any]:
    arch = ARCH.get(platform.machine(), platform.machine())
    with tempfile.TemporaryDirectory(prefix="ocipack.") as tmpdir:
        blobs = [layer_blob(p, cache if cached else None, Path(tmpdir)) for p, cached in layers]
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        image_config = {
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [d for d, _, _ in blobs]},
            "history": [{"created": created, "created_by": f"ocipack.py {p.name}"} for p, _ in layers],
        }
        config_b = json.dumps(image_config, separators=(",", ":")).encode()
        manifest_b = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _digest(config_b),
                    "size": len(config_b),
                },
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dg,
                     "size": b.stat().st_size}
                    for _, dg, b in blobs
                ],
            },
            separators=(",", ":"),
        ).encode()
        last = name.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else "latest"
        index_b = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": _digest(manifest_b),
                        "size": len(manifest_b),
                        "platform": {"architecture": arch, "os": "linux"},
                        "annotations": {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag,
                        },
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        part = out.with_name(out.name + ".part")
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tf:
            _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add_bytes(tf, "index.json", index_b)
            for data in (config_b, manifest_b):
                _add_bytes(tf, f"blobs/sha256/{_digest(data)[7:]}", data)
            for dg in dict.fromkeys(dg for _, dg, _ in blobs):
                blob = next(b for _, d, b in blobs if d == dg)
                info = tf.gettarinfo(str(blob), f"blobs/sha256/{dg[7:]}")
                info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
                with blob.open("rb") as f:
                    tf.addfile(info, f)
        os.replace(part, out)
        return {"out": str(out), "name": name, "manifest": _digest(manifest_b),
                "layers_gz_bytes": [b.stat().st_size for _, _, b in blobs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--name", required=True, help="full image name, e.g. localhost/dranet:dev")
    ap.add_argument(
        "--dockerfile", required=True, type=Path, help="the image config comes from its final stage"
    )
    ap.add_argument(
        "--layer", action="append", dest="layers", default=[], type=lambda p: (Path(p), False)
    )
    ap.add_argument("--cached-layer", action="append", dest="layers", type=lambda p: (Path(p), True))
    ap.add_argument("--blob-cache", type=Path)
    a = ap.parse_args()
    if a.blob_cache:
        a.blob_cache.mkdir(parents=True, exist_ok=True)
    print(json.dumps(pack(a.out, a.name, a.layers, dockerfile_config(a.dockerfile), a.blob_cache)))


if __name__ == "__main__":
    sys.exit(main())

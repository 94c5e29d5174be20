#!/usr/bin/env python3
"""Writes an OCI image layout archive from a root filesystem folder, without a
registry or a container engine, for `ctr images import`.

    oci-image.py --name docker.io/library/NAME:TAG --rootfs DIR --out FILE.tar \\
        [--entrypoint ARG ...] [--user UID] [--env K=V ...] [--workdir DIR]

The layer is deterministic (sorted entries, zero times, root ownership), so
the same inputs give the same image digest.
"""
import argparse
import hashlib
import io
import json
import os
import tarfile


def layer_tar(rootfs):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(folder, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isfile():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--rootfs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--entrypoint", nargs="*", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--env", nargs="*", default=[])
    parser.add_argument("--workdir", default="/")
    args = parser.parse_args()

    layer = layer_tar(args.rootfs)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": args.entrypoint,
            "User": args.user,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", *args.env],
            "WorkingDir": args.workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        config_digest, config_size = blob(tar, json.dumps(config, sort_keys=True).encode())
        layer_digest, layer_size = blob(tar, layer)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"io.containerd.image.name": args.name, "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1]},
            }],
        }
        for name, content in (("index.json", index), ("oci-layout", {"imageLayoutVersion": "1.0.0"})):
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()

"""Write a one-layer image in `docker save` format from a few files, for `ctr images import`.

The local node has no image registry: its pause and CoreDNS images are a static binary each,
packed here (no podman needed). Usage:

    mkimage.py OUT.tar NAME:TAG ENTRYPOINT_JSON SRC=DEST [SRC=DEST ...]

Each SRC file lands at DEST in the image (mode kept, owner root, mtime 0: the same inputs give the
same image ID).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import PurePosixPath


def layer_tar(files: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parents: set[str] = set()
        for _, dest in files:
            for parent in reversed(PurePosixPath(dest.lstrip("/")).parents[:-1]):
                if str(parent) not in parents:
                    parents.add(str(parent))
                    info = tarfile.TarInfo(str(parent))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
        for src, dest in files:
            info = tar.gettarinfo(src, dest.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(src, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def main(argv: list[str]) -> None:
    out, ref, entrypoint = argv[0], argv[1], json.loads(argv[2])
    files = [tuple(arg.split("=", 1)) for arg in argv[3:]]
    layer = layer_tar([(src, dest) for src, dest in files])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "hack/node/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    with tarfile.open(out, "w") as tar:
        for name, data in (
            (config_name, config_bytes),
            ("layer.tar", layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(sys.argv[1:])

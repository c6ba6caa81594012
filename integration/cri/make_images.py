#!/usr/bin/env python3
"""Write a docker-archive tarball (what `docker save` writes; `ctr images import` reads it) with
two images sharing one layer, made from ROOTFS: the pod sandbox ("pause") image, whose
entrypoint sleeps forever, and the test image (busybox, default command sh).
usage: make_images.py ROOTFS OUT.tar"""
import hashlib
import io
import json
import sys
import tarfile

rootfs, out = sys.argv[1], sys.argv[2]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    t.add(rootfs, arcname=".")
layer = buf.getvalue()
diff = hashlib.sha256(layer).hexdigest()
env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
images = {
    "localhost/lrun-cri-pause:1": {"Entrypoint": ["sleep", "2147483647"], "Env": env},
    "localhost/lrun-cri-busybox:1": {"Cmd": ["sh"], "Env": env},
}
manifest, files = [], {diff + "/layer.tar": layer}
for tag, cfg in images.items():
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": cfg,
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]}},
                        sort_keys=True).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    files[name] = config
    manifest.append({"Config": name, "RepoTags": [tag], "Layers": [diff + "/layer.tar"]})
files["manifest.json"] = json.dumps(manifest).encode()
with tarfile.open(out, "w") as t:
    for name, data in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

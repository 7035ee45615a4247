#!/usr/bin/python3
"""Write an OCI image layout directory for Shoal's integration tests.

Python 3 standard library only. The layout (oci-layout, index.json,
blobs/sha256/<hex>) can be pushed with
  skopeo copy --dest-tls-verify=false oci:DIR:TAG docker://127.0.0.1:PORT/repo:TAG

Layers are uncompressed tar files (media type
application/vnd.oci.image.layer.v1.tar), so a blob's digest is also its
diff_id and its size is exact. Everything is deterministic: the same
arguments give byte-identical blobs and the same manifest digest.

  --busybox          first layer: /bin/busybox (Debian's busybox-static) plus
                     /bin/sh, /bin/echo, /bin/cat, ... as symlinks to it, and
                     /etc/shoal-image ("shoal test image"); identical in every
                     image, so images can share it
  --layer SIZE       one random-data layer holding /data/<seed>-<i>.bin of SIZE
                     bytes (suffixes k, m, g = KiB, MiB, GiB); repeatable
  --seed N           seed of the random data (layer i uses seed N*1000+i)

On stdout: one JSON object describing the image: manifest and config
digests, layer digests, every blob with digest/size/mediaType ("blobs",
manifest first), and the random files with their sha256 ("files").
"""

import argparse
import hashlib
import io
import json
import os
import random
import sys
import tarfile

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"

# Fixed metadata so that the tar bytes do not depend on the machine or time.
MTIME = 1700000000
# /etc/shoal-image in the busybox layer. The busybox layer is the same in
# every image (so images can share it), the random layers differ by seed.
MARKER = "shoal test image\n"
CREATED = "2023-11-14T22:13:20Z"
CHUNK = 1 << 20

BUSYBOX_APPLETS = ["sh", "echo", "cat", "ls", "sha256sum", "true", "false",
                   "sleep", "wc", "head", "id", "uname", "env"]


def parse_size(text):
    text = text.strip().lower()
    mult = 1
    for suffix, m in (("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30),
                      ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if text.endswith(suffix):
            text, mult = text[: -len(suffix)], m
            break
    value = int(text) * mult
    if value < 0:
        raise argparse.ArgumentTypeError("negative size")
    return value


class HashingWriter:
    """File-like object that hashes and counts what it writes to a file."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data):
        self.f.write(data)
        self.h.update(data)
        self.n += len(data)
        return len(data)

    def tell(self):
        return self.n


class RandomReader:
    """Deterministic pseudo-random bytes, read in pieces (for tarfile.addfile)."""

    def __init__(self, seed, size):
        self.rng = random.Random(seed)
        self.left = size
        self.buf = b""
        self.pos = 0
        self.hash = hashlib.sha256()  # of the bytes handed out

    def read(self, n=-1):
        if self.pos >= len(self.buf) and self.left > 0:
            take = min(CHUNK, self.left)
            self.buf, self.pos = self.rng.randbytes(take), 0
            self.left -= take
        if n is None or n < 0:
            n = len(self.buf) - self.pos
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        self.hash.update(out)
        return out


def tar_info(name, **kw):
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


class Layout:
    def __init__(self, out):
        self.out = out
        self.blobs = os.path.join(out, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)

    def _tmp(self):
        return os.path.join(self.blobs, ".tmp-%d" % os.getpid())

    def add_bytes(self, data):
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blobs, digest)
        with open(path, "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)

    def add_tar(self, fill):
        """fill(tarfile) writes the members; returns (digest, size)."""
        tmp = self._tmp()
        with open(tmp, "wb") as raw:
            hw = HashingWriter(raw)
            with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT,
                              bufsize=CHUNK) as tf:
                fill(tf)
        digest = hw.h.hexdigest()
        os.replace(tmp, os.path.join(self.blobs, digest))
        return "sha256:" + digest, hw.n


def busybox_layer(tf, busybox):
    tf.addfile(tar_info("bin", type=tarfile.DIRTYPE, mode=0o755))
    tf.addfile(tar_info("etc", type=tarfile.DIRTYPE, mode=0o755))
    size = os.path.getsize(busybox)
    with open(busybox, "rb") as f:
        tf.addfile(tar_info("bin/busybox", size=size, mode=0o755), f)
    for applet in BUSYBOX_APPLETS:
        tf.addfile(tar_info("bin/" + applet, type=tarfile.SYMTYPE,
                            linkname="busybox", mode=0o777))
    marker = MARKER.encode()
    tf.addfile(tar_info("etc/shoal-image", size=len(marker), mode=0o644),
               io.BytesIO(marker))


def random_layer(tf, path, size, seed, sums):
    tf.addfile(tar_info("data", type=tarfile.DIRTYPE, mode=0o755))
    reader = RandomReader(seed, size)
    tf.addfile(tar_info(path, size=size, mode=0o644), reader)
    sums[path] = reader.hash.hexdigest()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="OCI layout directory to write")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--busybox", action="store_true",
                    help="first layer holds a static busybox")
    ap.add_argument("--busybox-path", default="/bin/busybox")
    ap.add_argument("--layer", action="append", type=parse_size, default=[],
                    metavar="SIZE", help="add a random-data layer (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    if not args.busybox and not args.layer:
        ap.error("an image needs at least one layer (--busybox or --layer)")

    lay = Layout(args.out)
    layers = []  # (digest, size, description)
    if args.busybox:
        d, n = lay.add_tar(lambda tf: busybox_layer(tf, args.busybox_path))
        layers.append((d, n, "busybox"))
    files, sums = [], {}
    for i, size in enumerate(args.layer):
        path = "data/%d-%d.bin" % (args.seed, i)
        seed = args.seed * 1000 + i
        d, n = lay.add_tar(lambda tf, path=path, size=size, seed=seed:
                           random_layer(tf, path, size, seed, sums))
        layers.append((d, n, "random %d bytes" % size))
        files.append({"path": "/" + path, "size": size,
                      "sha256": sums[path]})

    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"] if args.busybox else ["/bin/true"],
            "Labels": {"org.shoal.test.seed": str(args.seed)},
        },
        "rootfs": {"type": "layers", "diff_ids": [d for d, _, _ in layers]},
        "history": [{"created": CREATED, "created_by": "mkimage.py: " + what}
                    for _, _, what in layers],
    }
    cfg_d, cfg_n = lay.add_bytes(json.dumps(config, indent=2, sort_keys=True).encode())

    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": cfg_d, "size": cfg_n},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": d, "size": n}
                   for d, n, _ in layers],
    }
    man_d, man_n = lay.add_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode())

    # index.json and oci-layout: one manifest per tag; merge with an existing
    # index so several tags can share a layout directory.
    index_path = os.path.join(args.out, "index.json")
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [
        m for m in index.get("manifests", [])
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != args.tag
    ]
    index["manifests"].append({
        "mediaType": MEDIA_MANIFEST, "digest": man_d, "size": man_n,
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"org.opencontainers.image.ref.name": args.tag},
    })
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(args.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    blobs = [{"kind": "manifest", "digest": man_d, "size": man_n, "mediaType": MEDIA_MANIFEST},
             {"kind": "config", "digest": cfg_d, "size": cfg_n, "mediaType": MEDIA_CONFIG}]
    blobs += [{"kind": "layer", "digest": d, "size": n, "mediaType": MEDIA_LAYER}
              for d, n, _ in layers]
    out = {
        "layout": os.path.abspath(args.out),
        "tag": args.tag,
        "seed": args.seed,
        "busybox": args.busybox,
        "manifest": man_d,
        "config": cfg_d,
        "layers": [d for d, _, _ in layers],
        "blobs": blobs,
        "files": files,
        "total_size": sum(b["size"] for b in blobs),
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

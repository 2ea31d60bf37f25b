#!/bin/sh
# A minimal Debian root file system with Python 3, as a tarball for
# `podman import` / `docker import`, for hosts that reach Debian's package
# archive but no image registry. Usage: deploy/debian-base.sh OUT.tar
# (needs root and debootstrap; SUITE=bookworm and MIRROR=<archive URL> optional).
set -eu
out=${1:?usage: debian-base.sh OUT.tar}
suite=${SUITE:-bookworm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$tmp/rootfs" ${MIRROR:-}
rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*
tar -C "$tmp/rootfs" -cf "$out.part" .
mv "$out.part" "$out"
echo "$out"

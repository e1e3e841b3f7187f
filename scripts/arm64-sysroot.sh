#!/usr/bin/env bash
# Make an arm64 (aarch64) Debian 12 sysroot holding python3.11, Node.js and everything they load, for
# `prebake build --sysroot DIR --platform linux/arm64` (docs/multiarch.md).
#
#   scripts/arm64-sysroot.sh [DIR]      # default /var/tmp/prebake-arm64-sysroot
#
# Needs root (dpkg --add-architecture arm64, apt-get update). Downloads the packages with
# `apt-get download` into /var/tmp/prebake-arm64-debs (kept as a cache), unpacks them with
# `dpkg-deb -x`, merges /bin, /sbin and /lib into /usr as Debian 12 installs do, and writes a
# dpkg database (status + info/*.list) so the SBOM names each file's package. Nothing is
# configured (no maintainer scripts run): the CA bundle, which ca-certificates' postinst
# generates, is copied from the build host instead (it is the same text on any architecture).
#
# Idempotent: a DIR whose stamp names the same package versions is left as it is.
set -euo pipefail

DIR=${1:-/var/tmp/prebake-arm64-sysroot}
DEBS=${PREBAKE_ARM64_DEBS:-/var/tmp/prebake-arm64-debs}
ROOTS=(python3-minimal python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libc6 libgcc-s1 zlib1g libssl3 libffi8 libsqlite3-0 libbz2-1.0 liblzma5 libexpat1 libuuid1
  libncursesw6 libtinfo6 libreadline8 libmpdec3 libdb5.3 libgdbm6 libgdbm-compat4 libnsl2
  libtirpc3 libcrypt1 base-files nodejs)
# Architecture: all (data only); apt-cache knows them without the :arm64 qualifier.
ALL_ARCH=(media-types tzdata)

if [ "$(id -u)" != 0 ]; then
  echo "arm64-sysroot.sh: needs root (dpkg --add-architecture, apt-get update)" >&2
  exit 2
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -qq
elif ! apt-cache show libc6:arm64 >/dev/null 2>&1; then
  apt-get update -qq
fi

# The closure of Depends/Pre-Depends of the roots, arm64 or arch-independent packages only.
mapfile -t PKGS < <(
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${ROOTS[@]/%/:arm64}" 2>/dev/null |
    awk '/^[a-z0-9]/ { print }' | sed 's/:arm64$//' | sort -u |
    # debconf and the perl it drags in only configure packages; nothing here is configured.
    grep -vxE 'debconf|debconf-2.0|cdebconf|perl-base|dpkg|tar|install-info|libselinux1|libpcre2-8-0|libzstd1|libmd0|libacl1|libattr1|awk|mawk|gawk|original-awk|libsigsegv2|libmpfr6|libgmp10|perl|perl-modules-5.36|libperl5.36'
)
mapfile -t PKGS < <(printf '%s\n' "${PKGS[@]}" "${ALL_ARCH[@]}" | sort -u)
# Exact versions, so the stamp changes when Debian's archive does: one apt-cache call for
# the arm64 packages, one for the rest (Architecture: all has no arm64 candidate).
candidates() {
  apt-cache policy "$@" | awk '/^[^ ].*:$/ { sub(/:$/, ""); sub(/:arm64$/, ""); p = $0 }
    /^  Candidate:/ && $2 != "(none)" { print p "=" $2 }'
}
mapfile -t VERSIONS < <(candidates "${PKGS[@]/%/:arm64}")
mapfile -t REST < <(printf '%s\n' "${PKGS[@]}" | grep -vxF -f <(printf '%s\n' "${VERSIONS[@]%%=*}"))
if [ "${#REST[@]}" -gt 0 ]; then
  mapfile -t MORE < <(candidates "${REST[@]}")
  VERSIONS+=("${MORE[@]}")
fi
mapfile -t VERSIONS < <(printf '%s\n' "${VERSIONS[@]}" | sort -u)
STAMP=$(printf '%s\n' "${VERSIONS[@]}" | sha256sum | cut -c1-16)
if [ -f "$DIR/.prebake-sysroot" ] && [ "$(cat "$DIR/.prebake-sysroot")" = "$STAMP" ]; then
  echo "$DIR: up to date (${#VERSIONS[@]} packages)"
  exit 0
fi

mkdir -p "$DEBS"
# apt-get download drops privileges to _apt where it can write the directory.
chown _apt:root "$DEBS" 2>/dev/null || true
(cd "$DEBS" && for pv in "${VERSIONS[@]}"; do
  p=${pv%%=*} v=${pv#*=}
  ls "${p}_"*"_"{arm64,all}.deb >/dev/null 2>&1 && [ -n "$(ls "${p}_${v//:/%3a}_"*.deb 2>/dev/null)" ] && continue
  apt-get download -qq "$p:arm64=$v" 2>/dev/null || apt-get download -qq "$p=$v"
done)

TMP=$(mktemp -d "$(dirname "$DIR")/.sysroot.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/var/lib/dpkg/info"
: >"$TMP/var/lib/dpkg/status"
for pv in "${VERSIONS[@]}"; do
  p=${pv%%=*} v=${pv#*=}
  deb=$(ls "$DEBS/${p}_${v//:/%3a}_"*.deb | head -n1)
  dpkg-deb -x "$deb" "$TMP"
  arch=$(dpkg-deb -f "$deb" Architecture)
  { dpkg-deb -f "$deb" | grep -v '^Status:' | sed '1a Status: install ok installed'; echo; } >>"$TMP/var/lib/dpkg/status"
  list="$TMP/var/lib/dpkg/info/$p.list"
  [ "$arch" = arm64 ] && [ "$(dpkg-deb -f "$deb" Multi-Arch)" = same ] && list="$TMP/var/lib/dpkg/info/$p:arm64.list"
  dpkg-deb -c "$deb" | awk '{ $1=$2=$3=$4=$5=""; sub(/^ +/, ""); sub(/ -> .*/, ""); print }' |
    sed -e 's#^\./#/#' -e 's#/$##' -e 's#^$#/.#' >"$list"
done
# Debian 12's merged /usr: /lib -> usr/lib and so on, as on the build host.
for d in bin sbin lib; do
  if [ -d "$TMP/$d" ] && [ ! -L "$TMP/$d" ]; then
    mkdir -p "$TMP/usr/$d"
    cp -a "$TMP/$d/." "$TMP/usr/$d/"
    rm -rf "${TMP:?}/$d"
  fi
  ln -sfn "usr/$d" "$TMP/$d"
done
mkdir -p "$TMP/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$TMP/etc/ssl/certs/ca-certificates.crt"
echo "$STAMP" >"$TMP/.prebake-sysroot"
rm -rf "$DIR"
mv "$TMP" "$DIR"
trap - EXIT
echo "$DIR: ${#VERSIONS[@]} packages"

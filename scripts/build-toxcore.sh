#!/usr/bin/env bash
# Builds the newest c-toxcore source package Debian has (suite unstable, source package libtoxcore)
# into PREFIX as a static library with a pkg-config file, for tox-runtime to link:
#   scripts/build-toxcore.sh [PREFIX]        # default: target/toxcore
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cargo build ...
# apt runs with a private configuration kept beside PREFIX (PREFIX's parent/toxcore-apt: its own
# sources list, lists and download cache); the machine's apt configuration is only read, for its
# Debian mirror, and never changed. The Sources index is checked against Debian's archive keyring
# and the downloaded source against the index's hashes, as apt does for any package.
# Static, because a private libtoxcore.so.2 has the same soname as Debian's libtoxcore2 and the
# loader could pick that one at run time. ToxAV, the bootstrap daemon and c-toxcore's own tests are
# not built: toxmail uses none of them. Idempotent: nothing is built when PREFIX already holds the
# newest version. Needs root to install the few build packages that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=$(realpath -m "${1:-target/toxcore}")
APT_DIR="$(dirname "$PREFIX")/toxcore-apt"
SUITE=${TOXMAIL_TOXCORE_SUITE:-unstable}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
BUILD_PACKAGES=(cmake gcc make pkgconf libsodium-dev dpkg-dev xz-utils debian-archive-keyring)

missing=()
for p in "${BUILD_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The machine's Debian mirror, as its apt configuration names it.
# shellcheck disable=SC2016 # $(REPO_URI) is apt's format field, not a shell expansion
mirror=${TOXMAIL_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' 'Origin: Debian' \
  'Label: Debian' 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian/}

mkdir -p "$APT_DIR"/{lists/partial,cache/archives/partial,source}
exec 9>"$APT_DIR/lock"
flock 9
echo "deb-src [signed-by=$KEYRING] $mirror $SUITE main" >"$APT_DIR/sources.list"
apt_private=(
  -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::Cache=$APT_DIR/cache"
  -o Dir::State::status=/dev/null
)
apt-get "${apt_private[@]}" update -qq
version=$(apt-cache "${apt_private[@]}" showsrc libtoxcore | sed -n 's/^Version: //p' | sort -V | tail -n1)
[ -n "$version" ] || { echo "no libtoxcore source package in $mirror $SUITE" >&2; exit 1; }
upstream=${version%-*}

if [ "$(cat "$PREFIX/.debian-version" 2>/dev/null)" = "$version" ]; then
  echo "libtoxcore $upstream (Debian $version) already in $PREFIX"
  echo "PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig"
  exit 0
fi

source_dir="$APT_DIR/source/$version"
if [ ! -f "$source_dir/libtoxcore_$version.dsc" ]; then
  rm -rf "$source_dir.partial"
  mkdir -p "$source_dir.partial"
  # apt downloads as its unprivileged user where that user can write the target.
  id _apt >/dev/null 2>&1 && chown _apt "$source_dir.partial"
  (cd "$source_dir.partial" && apt-get "${apt_private[@]}" source -qq --download-only "libtoxcore=$version")
  rm -rf "$source_dir"
  mv "$source_dir.partial" "$source_dir"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The uploader's signature on the .dsc is not checked (that needs debian-keyring); its hashes are, and
# apt checked the .dsc against the Sources index the archive key signed.
dpkg-source -x "$source_dir/libtoxcore_$version.dsc" "$work/src" >"$work/unpack.log" 2>&1 ||
  { cat "$work/unpack.log" >&2; exit 1; }
# Debian's hardening flags, as its own build of the package uses them.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
eval "$(dpkg-buildflags --export=sh)"
export CFLAGS="$CPPFLAGS $CFLAGS" # CMake reads no CPPFLAGS (_FORTIFY_SOURCE is there)
cmake -S "$work/src" -B "$work/build" -Wno-dev \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib \
  -DENABLE_SHARED=OFF -DENABLE_STATIC=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
  -DBUILD_TOXAV=OFF -DBOOTSTRAP_DAEMON=OFF -DDHT_BOOTSTRAP=OFF \
  -DUNITTEST=OFF -DAUTOTEST=OFF >"$work/configure.log" 2>&1 || { cat "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" -j "$(nproc)" >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
rm -rf "$PREFIX"
cmake --install "$work/build" >/dev/null
built=$(PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" pkg-config --modversion toxcore)
[ "$built" = "$upstream" ] || { echo "built $built, expected $upstream" >&2; exit 1; }
echo "$version" >"$PREFIX/.debian-version"
echo "libtoxcore $upstream (Debian $version) built in $PREFIX"
echo "PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig"

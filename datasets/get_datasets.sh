#!/usr/bin/env bash
# Fetch CIFAR-10 (python version) and Fashion-MNIST into the data folder and verify
# them against the md5 lists next to this script.
#
#   datasets/get_datasets.sh [DEST]
#
# DEST defaults to $FUNKCIJE_DATA, else this script's folder (the repository's
# datasets/), which is where funkcije.data_utils looks. A dataset already present
# whose files match one of the known md5 lists is left alone and nothing is
# downloaded. A dataset that is present but incomplete or does not match is reported
# and left alone too (remove its folder to download it again). Downloads go to a
# temporary folder and are moved into place only after every checksum matches.
#
# Known releases, one md5 list each (every file of a dataset must match the same list):
#   cifar-10-batches-py.canonical.md5  the files of the Toronto tarball
#   cifar-10-batches-py.md5            the copy this project's CI uses (re-pickled:
#                                      different bytes and image order, same format)
#   fashion-mnist.canonical.md5        the files zalando publishes
#   fashion-mnist.md5                  the copy this project's CI uses (same data,
#                                      re-gzipped)
#
# Exit status: 0 when both datasets are in place and verified, 1 otherwise.
# Environment (for mirrors and testing): FUNKCIJE_CIFAR10_URL overrides the tarball
# URL; FUNKCIJE_FASHION_MNIST_URLS overrides the space-separated Fashion-MNIST base URLs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${1:-${FUNKCIJE_DATA:-$here}}
case $dest in /*) ;; *) dest=$PWD/$dest ;; esac

cifar_url=${FUNKCIJE_CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz}
fashion_urls=${FUNKCIJE_FASHION_MNIST_URLS:-"https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"}

tmp=""
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

say() { printf '%s\n' "$*"; }
err() { printf 'get_datasets.sh: %s\n' "$*" >&2; }

md5_of() {
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$1" | cut -d' ' -f1
    elif command -v md5 >/dev/null 2>&1; then
        md5 -q "$1"
    elif command -v openssl >/dev/null 2>&1; then
        openssl md5 -r "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib, sys; print(hashlib.md5(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

# The file names a dataset needs, from its md5 list.
names_of() { awk 'NF { print $2 }' "$here/$1.md5"; }

# Files of dataset $2 that are absent from folder $1.
missing_in() {
    local dir=$1 name=$2 f
    for f in $(names_of "$name"); do
        [ -f "$dir/$f" ] || printf '%s ' "$f"
    done
}

# Print the md5 list (of dataset $2) that folder $1 matches; fail if none does.
# Each file is hashed once, then the sorted "md5  name" lines are compared per list.
matching_list() {
    local dir=$1 name=$2 actual f list
    actual=$(for f in $(names_of "$name"); do
        printf '%s  %s\n' "$(md5_of "$dir/$f")" "$f"
    done | sort)
    for list in "$here/$name".md5 "$here/$name".*.md5; do
        [ -f "$list" ] || continue
        if [ "$actual" = "$(awk 'NF { print $1 "  " $2 }' "$list" | sort)" ]; then
            basename "$list"
            return 0
        fi
    done
    return 1
}

# Is $2 a known md5 for file name $1 (in any list of dataset $3)?
known_md5() {
    cat "$here/$3".md5 "$here/$3".*.md5 2>/dev/null | awk -v n="$1" -v s="$2" '$2 == n && $1 == s { found = 1 } END { exit !found }'
}

fetch() {  # fetch URL OUT
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 2 --connect-timeout 30 --progress-bar -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -nv -O "$2" "$1"
    else
        err "neither curl nor wget is installed"
        return 1
    fi
}

# Check a dataset folder that exists. 0: present and verified; 1: reported problem.
check_present() {
    local dir=$1 name=$2 missing list
    missing=$(missing_in "$dir" "$name")
    if [ -n "$missing" ]; then
        err "$dir is incomplete (missing: $missing); remove the folder and run this script again"
        return 1
    fi
    if list=$(matching_list "$dir" "$name"); then
        say "$name: present in $dir, checksums match $list; nothing to download"
        return 0
    fi
    err "$dir: checksums match no known release (datasets/$name*.md5); the files may be damaged: remove the folder and run this script again"
    return 1
}

make_tmp() {
    mkdir -p "$dest"
    if [ -z "$tmp" ]; then
        tmp=$(mktemp -d "$dest/.get_datasets.XXXXXX")
    fi
}

get_cifar10() {
    local name=cifar-10-batches-py dir list
    dir="$dest/$name"
    if [ -e "$dir" ]; then
        check_present "$dir" "$name"
        return
    fi
    make_tmp
    say "$name: downloading $cifar_url"
    if ! fetch "$cifar_url" "$tmp/cifar-10-python.tar.gz"; then
        err "$name: download failed ($cifar_url)"
        return 1
    fi
    if ! tar -xzf "$tmp/cifar-10-python.tar.gz" -C "$tmp"; then
        err "$name: the downloaded tarball could not be unpacked"
        return 1
    fi
    rm -f "$tmp/cifar-10-python.tar.gz"
    if [ ! -d "$tmp/$name" ] || [ -n "$(missing_in "$tmp/$name" "$name")" ]; then
        err "$name: the tarball did not contain $name/ with all of: $(names_of "$name" | tr '\n' ' ')"
        return 1
    fi
    if ! list=$(matching_list "$tmp/$name" "$name"); then
        err "$name: the downloaded files match no known md5 list (datasets/$name*.md5); not installed"
        return 1
    fi
    mv "$tmp/$name" "$dir" || { err "$name: could not move the files into $dir"; return 1; }
    say "$name: installed in $dir, checksums match $list"
}

get_fashion_mnist() {
    local name=fashion-mnist dir list f base ok
    dir="$dest/$name"
    if [ -e "$dir" ]; then
        check_present "$dir" "$name"
        return
    fi
    make_tmp
    mkdir -p "$tmp/$name"
    for f in $(names_of "$name"); do
        ok=0
        for base in $fashion_urls; do
            say "$name: downloading $base/$f"
            if fetch "$base/$f" "$tmp/$name/$f" && known_md5 "$f" "$(md5_of "$tmp/$name/$f")" "$name"; then
                ok=1
                break
            fi
            err "$name: $base/$f failed or has an unknown md5; trying the next mirror"
            rm -f "$tmp/$name/$f"
        done
        if [ "$ok" -ne 1 ]; then
            err "$name: could not download a verified $f from any of: $fashion_urls"
            return 1
        fi
    done
    if ! list=$(matching_list "$tmp/$name" "$name"); then
        err "$name: the downloaded files do not all match one md5 list (datasets/$name*.md5); not installed"
        return 1
    fi
    mv "$tmp/$name" "$dir" || { err "$name: could not move the files into $dir"; return 1; }
    say "$name: installed in $dir, checksums match $list"
}

status=0
get_cifar10 || status=1
get_fashion_mnist || status=1
if [ "$status" -eq 0 ]; then
    say "data ready in $dest (use it with: export FUNKCIJE_DATA=$dest)"
fi
exit "$status"

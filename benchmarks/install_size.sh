#!/usr/bin/env bash
# The installed size of mlcli's two installs: the core (`pip install .`: no TensorFlow, what an
# inference-only image or venv holds) and `.[train]` (the README's first command), each in a
# fresh venv under /tmp, with the tested versions (constraints.txt). Prints, for each, the size
# of its site-packages (du; the empty venv's own pip included, printed too), its number of
# installed distributions (pip itself left out) and the ratio of the two.
#
#   benchmarks/install_size.sh            # about 2 minutes with a warm pip cache
#   PYTHON=python3.12 benchmarks/install_size.sh
#
# It installs a copy of the working tree (tracked and untracked files, ignored ones left out)
# so that the build writes nothing into the repository; the venvs are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
scratch="$(mktemp -d /tmp/mlcli-install-size.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

mkdir "$scratch/src"
git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -e "{}" && echo "{}"' \
    | tar -cf - -T - | tar -xf - -C "$scratch/src"

site_packages() {
    "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

bytes_of() {
    du -sb "$(site_packages "$1")" | cut -f1
}

distributions_of() {
    "$1/bin/python" -m pip list --format=freeze --exclude pip 2>/dev/null | wc -l
}

"$python" -m venv "$scratch/empty"
empty=$(bytes_of "$scratch/empty")
printf '%-8s %12s %14s\n' install "size (MiB)" distributions
printf '%-8s %12.1f %14s\n' "(empty)" "$(echo "$empty / 1048576" | bc -l)" 0

declare -A size count
for install in core train; do
    venv="$scratch/$install"
    "$python" -m venv "$venv"
    target="$scratch/src"
    [[ $install == train ]] && target="$scratch/src[train]"
    start=$(date +%s)
    "$venv/bin/python" -m pip install --quiet "$target" -c constraints.txt
    seconds=$(($(date +%s) - start))
    size[$install]=$(bytes_of "$venv")
    count[$install]=$(distributions_of "$venv")
    printf '%-8s %12.1f %14d   (pip install: %ds)\n' "$install" \
        "$(echo "${size[$install]} / 1048576" | bc -l)" "${count[$install]}" "$seconds"
done
# the core must not have pulled TensorFlow or Keras in
if "$scratch/core/bin/python" -c 'import importlib.util as u, sys
sys.exit(0 if u.find_spec("tensorflow") or u.find_spec("keras") else 1)'; then
    echo "error: the core install holds TensorFlow or Keras" >&2
    exit 1
fi
printf 'train/core: %.1fx the size, %.1fx the distributions\n' \
    "$(echo "${size[train]} / ${size[core]}" | bc -l)" \
    "$(echo "${count[train]} / ${count[core]}" | bc -l)"

#!/usr/bin/env bash
# Install the offline data sets the default run uses: Debian's dataset-fashion-mnist.
# As root it installs the package when missing; otherwise it says what to run. The workflow
# falls back to nothing silently: a missing data set is a clear error at config check time.
set -u
if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing dataset-fashion-mnist (Debian package, ~30 MB)"
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || {
    echo "could not install dataset-fashion-mnist; run: sudo apt-get install dataset-fashion-mnist," \
         "or set train.dataset: digits in config.yaml" >&2; exit 1; }
else
  echo "Fashion-MNIST is not installed. Run: sudo apt-get install dataset-fashion-mnist" >&2
  echo "(or set train.dataset: digits in config.yaml, or train.data_dir to the *-ubyte.gz files)" >&2
  exit 1
fi

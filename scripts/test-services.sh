#!/usr/bin/env bash
# Starts what `make test` needs beyond the build: a single-node Slurm cluster (tests/slurm.rs),
# a real S3 server (Ceph's radosgw on loopback, tests/s3.rs) and Python polars and pyarrow under
# .cache/python (the checks that other tools read and write our Parquet). Each installs from
# Debian or PyPI on first use and is left alone when already up.
#
# A user who cannot have one (no root for apt-get, say) opts out of its checks by name:
# PRIVYNET_TEST_OPT_OUT=slurm,s3,python (or all). The tests that need it then pass without
# running it, and `make test` counts them in its last line; without the opt-out they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

opted_out() {
    [[ ",${PRIVYNET_TEST_OPT_OUT:-}," == *",$1,"* || ",${PRIVYNET_TEST_OPT_OUT:-}," == *",all,"* ]]
}

if opted_out slurm; then
    echo "test-services: Slurm opted out (PRIVYNET_TEST_OPT_OUT)" >&2
else
    scripts/slurm-up.sh
fi

if opted_out s3; then
    echo "test-services: the S3 server opted out (PRIVYNET_TEST_OPT_OUT)" >&2
else
    # A second try from scratch if the first fails: the script stops a half-started cluster
    # itself, and a cold machine has shown races its own retries may not all cover.
    scripts/s3-up.sh || { echo "s3-up failed once; trying again" >&2; sleep 2; scripts/s3-up.sh; }
fi

# Pinned, so that every machine tests against the same writers.
PY_PACKAGES=(polars==2.1.0 pyarrow==26.0.1)
if opted_out python; then
    echo "test-services: Python polars and pyarrow opted out (PRIVYNET_TEST_OPT_OUT)" >&2
elif ! PYTHONPATH=.cache/python python3 -c 'import polars, pyarrow' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --target .cache/python "${PY_PACKAGES[@]}"
fi

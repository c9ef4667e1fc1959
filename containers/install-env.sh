#!/bin/sh
# Builds one environment into an image (the %post of every containers/<env>.def): Miniforge's
# conda, then the env from the env file $1 at /conda-envs/<md5 of the file>, where Snakemake's
# `containerized:` rules look for it (its content hash), so `--sdm conda apptainer` activates
# it instead of creating an env per job.
set -eu
env_file=$1
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends ca-certificates curl
curl -fsSL -o /tmp/miniforge.sh \
    https://github.com/conda-forge/miniforge/releases/download/25.3.1-0/Miniforge3-25.3.1-0-Linux-x86_64.sh
sh /tmp/miniforge.sh -b -p /opt/conda
prefix=/conda-envs/$(md5sum "$env_file" | cut -c1-32)
/opt/conda/bin/conda env create --yes --prefix "$prefix" --file "$env_file"
ln -s "$prefix" /opt/env
/opt/conda/bin/conda clean --all --yes
rm -rf /tmp/miniforge.sh /var/lib/apt/lists/*

#!/usr/bin/env bash
# Build the ketabids image with docker or podman and run it the way BIDS App users do: read-only
# root filesystem and input, an arbitrary user id, no HOME, no network. Exits non-zero on any failure.
#
#   bash tests/container/check.sh        (README: "Container")
#
# Environment: KETABIDS_ENGINE (docker|podman; default: the first found), KETABIDS_BASE (an image to
# use instead of python:3.11-slim-bookworm), KETABIDS_TORCH_WHEELS (a folder holding the CPU torch
# wheel; default: pip's find-links folder if it holds one, else PyTorch's CPU index), PIP_CERT.
set -euo pipefail
{ # read whole before it runs: editing this file during a run cannot derail the run
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/container
version=$(cat "$root/version")
image=localhost/ketabids:$version
upstream_base=python:3.11-slim-bookworm
started=$SECONDS
failures=0

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

# --- engine ------------------------------------------------------------------------------------
engine=''
for candidate in ${KETABIDS_ENGINE:-docker podman}; do # a docker client without a daemon does not count
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
    engine=$candidate
    break
  fi
done
if [ -z "$engine" ]; then
  echo "check.sh: no working container engine (looked for: ${KETABIDS_ENGINE:-docker podman}); install Docker or Podman" >&2
  exit 1
fi
say "engine: $($engine --version)"

# --- base image: the upstream one if it can be pulled, else a Debian stand-in ------------------
base=${KETABIDS_BASE:-}
if [ -z "$base" ]; then
  if "$engine" image inspect "$upstream_base" >/dev/null 2>&1 \
    || timeout 120 "$engine" pull -q "docker.io/library/$upstream_base" >/dev/null 2>&1; then
    base=$upstream_base
  elif [ "$engine" = docker ]; then
    echo "check.sh: docker cannot pull $upstream_base (a stand-in base needs podman build --from)" >&2
    exit 1
  else
    base=localhost/ketabids-base:bookworm
    say "cannot pull $upstream_base: using $base, built from Debian packages"
    "$engine" image inspect "$base" >/dev/null 2>&1 || bash "$here/build-base.sh" "$engine" "$base"
  fi
fi

# Podman's defaults (crun, systemd cgroups, ulimits) fail on some hosts: fall back to runc + cgroupfs.
if [ "$engine" = podman ] && ! podman run --rm --network=none "$base" true >/dev/null 2>&1; then
  export CONTAINERS_CONF=$here/containers.conf
  say "podman defaults fail here: using $CONTAINERS_CONF"
  podman run --rm --network=none "$base" true
fi

# --- build -------------------------------------------------------------------------------------
build=("$engine" build -t "$image" --build-arg "VERSION=$version")
[ "$base" = "$upstream_base" ] || build+=(--from "$base")
torch_version=$(sed -n 's/^torch==//p' "$root/requirements.txt")
pip_setting() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
wheels=${KETABIDS_TORCH_WHEELS:-${PIP_FIND_LINKS:-$(pip_setting find-links)}}
cert=${PIP_CERT:-$(pip_setting cert)}
if [ "$engine" = podman ]; then # build-time mounts, left out of the image
  if [ -d "$wheels" ] && compgen -G "$wheels/torch-$torch_version+cpu-*.whl" >/dev/null; then
    build+=(--volume "$wheels:/torch-wheels:ro" --build-arg TORCH_INDEX=/torch-wheels)
    say "torch $torch_version+cpu from $wheels"
  fi
  if [ -f "$cert" ]; then
    build+=(--volume "$cert:/run/pip-cert.pem:ro" --build-arg PIP_CERT=/run/pip-cert.pem)
  fi
fi
say "build: ${build[*]} $root"
build_start=$SECONDS
"${build[@]}" "$root"
build_seconds=$((SECONDS - build_start))
size=$("$engine" image inspect --format '{{.Size}}' "$image")
size_mb=$((size / 1000000))
say "built $image in ${build_seconds}s: ${size_mb} MB"
[ "$size_mb" -le 2500 ] || fail "image is ${size_mb} MB (> 2500 MB)"

# --- run it as users do ------------------------------------------------------------------------
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ketabids-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
if [ "$(id -u)" = 0 ]; then uid=4242 gid=4242; else uid=$(id -u) gid=$(id -g); fi
run=("$engine" run --rm --read-only --tmpfs /tmp --network=none --user "$uid:$gid")
if [ "$engine" = podman ]; then
  run+=(--read-only-tmpfs=false) # only the documented --tmpfs /tmp is writable, as with Docker
  [ "$(id -u)" = 0 ] || run+=(--userns=keep-id)
fi
python=(--entrypoint /opt/venv/bin/python "$image" -I)
mkdir -p "$scratch"/{raw,tables,applied,out,readonly} "$scratch/fake/pandas"
echo 'raise ImportError("a pandas from the host PYTHONPATH was imported")' >"$scratch/fake/pandas/__init__.py"
chown "$uid:$gid" "$scratch"/{raw,tables,applied,out}
chmod 755 "$scratch" "$scratch/readonly"

expect() { # expect CODE NAME COMMAND...: exit code CODE, one error line, no traceback
  local code=$1 name=$2 status=0
  shift 2
  "$@" >"$scratch/log" 2>&1 || status=$?
  if [ "$status" != "$code" ]; then
    fail "$name: exit $status, expected $code"
    tail -n 20 "$scratch/log" >&2
  elif grep -q Traceback "$scratch/log"; then
    fail "$name: traceback"
    tail -n 20 "$scratch/log" >&2
  else
    say "ok: $name (exit $status)"
  fi
}

expect 0 "--version" "${run[@]}" "$image" --version
expect 66 "no /bids bound" "${run[@]}" "$image" /bids /out participant
say "simulate: one phantom (4 mm) and two table cohorts"
"${run[@]}" -v "$scratch:/data" "${python[@]}" -m ketabids.simulate /data/raw/bids \
  --n-discovery 1 --n-external --n-saline 0 --voxel-size 4 --seed 1 >/dev/null
for set in tables:5 applied:6; do
  "${run[@]}" -v "$scratch:/data" "${python[@]}" -m ketabids.simulate "/data/${set%:*}/bids" --mode tables \
    --n-discovery 30 --n-external 12 --n-saline 12 --effect-size 2 --seed "${set#*:}" \
    --output-dir "/data/${set%:*}/out" >/dev/null
done

expect 64 "unwritable /out" "${run[@]}" -v "$scratch/raw/bids:/bids:ro" -v "$scratch/readonly:/out" \
  "$image" /bids /out participant

participant_start=$SECONDS
expect 0 "participant level" "${run[@]}" -v "$scratch/raw/bids:/bids:ro" -v "$scratch/out:/out" \
  "$image" /bids /out participant --nprocs 1 --omp-nthreads 2
say "participant level in the container: $((SECONDS - participant_start)) s"
for suffix in desc-brain_mask.nii.gz label-GM_probseg.nii.gz seg-neuromorphometrics_morph.tsv \
  space-MNI152NLin2009aSym_label-GM_desc-modulated_probseg.nii.gz desc-tissue_morph.tsv; do
  [ -f "$scratch/out/sub-001/anat/sub-001_$suffix" ] || fail "missing output sub-001_$suffix"
done
[ -f "$scratch/out/sub-001.html" ] || fail "missing report sub-001.html"
foreign=$(find "$scratch/out" ! -user "$uid" | head -n 3)
[ -z "$foreign" ] || fail "outputs not owned by user $uid: $foreign"
expect 0 "BIDS validator on the outputs" "${run[@]}" -v "$scratch/out:/out:ro" \
  --entrypoint bids-validator-deno "$image" /out

group=(group --cv-repeats 1 --outer-folds 3 --inner-folds 3 --n-permutations 5 --c-grid 0.01 1)
# A host PYTHONPATH and ~/.local holding a broken pandas must not reach the app's imports, nor
# those of its worker processes (--n-jobs 2).
expect 0 "group level (host PYTHONPATH and HOME set)" "${run[@]}" \
  -v "$scratch/fake:/fake:ro" -e PYTHONPATH=/fake -e HOME=/fake -e PYTHONUSERBASE=/fake \
  -v "$scratch/tables/bids:/bids:ro" -v "$scratch/tables/out:/out" "$image" /bids /out "${group[@]}" --n-jobs 2
for name in metrics.tsv predictions.tsv weights.tsv model.skops model.json report.html; do
  [ -f "$scratch/tables/out/group/$name" ] || fail "missing group output $name"
done
expect 0 "group level --model" "${run[@]}" -v "$scratch/tables/out/group:/model:ro" \
  -v "$scratch/applied/bids:/bids:ro" -v "$scratch/applied/out:/out" \
  "$image" /bids /out group --model /model/model.skops --n-permutations 5 --n-jobs 1
[ -f "$scratch/applied/out/group/predictions.tsv" ] || fail "--model wrote no predictions.tsv"

say "image $image: ${size_mb} MB; build ${build_seconds} s; check total $((SECONDS - started)) s"
if [ "$failures" -gt 0 ]; then
  echo "check.sh: $failures check(s) failed" >&2
  exit 1
fi
say "all container checks passed"
exit 0
}

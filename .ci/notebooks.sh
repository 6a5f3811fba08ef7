#!/usr/bin/env bash
# Execute every text notebook (notebooks/NN_*.md) with papermill under a profile, in a kernel
# that runs under `coverage` restricted to dlbook, one data file per chapter in $2.
#
#   bash .ci/notebooks.sh smoke COVDIR    # the smoke profile (also catches .md/.ipynb drift)
#   bash .ci/notebooks.sh full COVDIR [NN] # the full profile's rehearsal: DLBOOK_REHEARSAL=1, the
#                                         # full code paths on the CPU at smoke sizes
#
# .ci/full_only.py COVDIR then prints the lines only the full profile executes.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=$1
cov=$(mkdir -p "$2" && cd "$2" && pwd)
py=${PYTHON:-$PWD/.venv/bin/python}
bin=$(dirname "$py")
# A kernelspec whose kernel is ipykernel under coverage (data saved when the kernel exits).
kernels="$cov/jupyter"
mkdir -p "$kernels/kernels/dlbook-coverage"
cat >"$kernels/kernels/dlbook-coverage/kernel.json" <<JSON
{"argv": ["$py", "-m", "coverage", "run", "--source=dlbook", "--omit=*/dlbook/data/samples/*",
          "-m", "ipykernel_launcher", "-f", "{connection_file}"],
 "display_name": "Python 3 (coverage of dlbook)", "language": "python"}
JSON
export JUPYTER_PATH="$kernels${JUPYTER_PATH:+:$JUPYTER_PATH}"
if [ "$profile" = full ]; then
  export DLBOOK_REHEARSAL=1
  what="rehearsal of the full profile"
else
  unset DLBOOK_REHEARSAL
  what="profile $profile"
fi
out="$cov/out"
mkdir -p "$out"
# Chapters run two at a time (most of their runs use one thread): $DLBOOK_CI_JOBS to change.
jobs=${DLBOOK_CI_JOBS:-2}
# and share the cores among them (dlbook.config.threads reads this)
cores=$(nproc 2>/dev/null || echo 2)
export DLBOOK_THREADS=${DLBOOK_THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}
run_one() {  # one chapter; its log and its verdict under $out
  local md=$1 name t0
  name=$(basename "${md%.md}")
  t0=$SECONDS
  if COVERAGE_FILE="$cov/.coverage.$profile.$name" "$bin/jupytext" --to ipynb -o - "$md" \
      | COVERAGE_FILE="$cov/.coverage.$profile.$name" "$bin/papermill" - "$out/$name.$profile.ipynb" \
          -k dlbook-coverage -p profile "$profile" --cwd notebooks --no-progress-bar --log-level WARNING \
          >"$out/$name.$profile.log" 2>&1; then
    echo "$name ($what): ok ($((SECONDS - t0)) s)"
  else
    tail -n 30 "$out/$name.$profile.log"
    echo "$name ($what): FAILED ($((SECONDS - t0)) s); the executed notebook: $out/$name.$profile.ipynb"
    touch "$out/$name.$profile.failed"
  fi
}
rm -f "$out"/*."$profile".failed
for md in notebooks/${3:-[0-9][0-9]}_*.md; do  # $3: one chapter (e.g. 04)
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$md" &
done
wait
failed=$(cd "$out" && ls -- *."$profile".failed 2>/dev/null | sed "s/\.$profile\.failed//" | tr '\n' ' ' || true)
if [ -n "$failed" ]; then
  echo "failed under $what: $failed"
  exit 1
fi

# Timed steps for .ci/run and .ci/checks (sourced, not run).
#   step NAME COMMAND [ARGS...]   run COMMAND, print its time, return its exit status
#   steps_summary                 one line per step so far: name, seconds, ok or FAILED
# A step that is a shell function runs with `set -e` off (bash turns it off inside `||`), so
# such functions chain their commands with `&&`.
STEP_LINES=()

step() {
  local name=$1 start took status=0
  shift
  echo "== $name: $*"
  start=$EPOCHREALTIME
  "$@" || status=$?
  took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  if [ "$status" = 0 ]; then
    STEP_LINES+=("$(printf '%-14s %7s s  ok' "$name" "$took")")
    echo "-- $name: ok, $took s"
  else
    STEP_LINES+=("$(printf '%-14s %7s s  FAILED (exit %s)' "$name" "$took" "$status")")
    echo "-- $name: FAILED (exit $status), $took s"
  fi
  return "$status"
}

steps_summary() {
  [ "${#STEP_LINES[@]}" -gt 0 ] && printf '   %s\n' "${STEP_LINES[@]}"
  return 0
}

# Shared by eval_suite.sh and train_variants.sh (sourced, not run): one labelled `dspark eval
# --json` line per run, and the one-line-per-run summary of such a file.

# labelled_eval LABEL SECONDS ERRLOG COMMAND...: runs COMMAND (a `dspark eval ... --json`) under
# `timeout SECONDS`, its stderr appended to ERRLOG, and prints its JSON object with "label"
# added, or {"label", "error"} when it failed or printed nothing.
labelled_eval() {
  local label="$1" secs="$2" errlog="$3"; shift 3
  local line rc
  line=$(timeout "$secs" "$@" 2>> "$errlog")
  rc=$?
  if [ $rc -ne 0 ] || [ -z "$line" ]; then echo "{\"label\": \"$label\", \"error\": \"exit $rc\"}"; return; fi
  echo "$line" | LABEL="$label" python3 -c "import json,os,sys; d=json.loads(sys.stdin.read()); d['label']=os.environ['LABEL']; print(json.dumps(d))"
}

# eval_summary FILE: macro tau, tau per dataset and the identical-output counts of every run.
eval_summary() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "error" in d: print(d["label"], "ERROR", d["error"]); continue
    taus = {k: round(v["acceptance_length"], 3) for k, v in d["datasets"].items()}
    same = {k: v.get("identical_outputs") for k, v in d["datasets"].items() if "identical_outputs" in v}
    print(d["label"], "macro tau", round(d["macro_acceptance_length"], 3), taus, "identical", same or "-")
PY
}

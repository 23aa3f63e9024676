"""reconciler: take an ML experiment from its description to its results, idempotently.

Where things are (a layer imports only its own layer and those below it; tests/unit/test_boundaries.py
holds the table and checks it):

    cli.py        options -> front door -> renderer -> exit code (click), one error-to-exit map; the only
                  place that reads argv
    app/          the front door, a module per command: apply.py (apply, watch, cancel: the lock, the
                  backend record, one pass or the watch), read.py (validate, plan, status, summarize,
                  scaffold), source.py (diff, a spec from `git:REV:path`); the policy from options
                  (options.py: Policy, preflight, polling, the submit cap from the backend's
                  Capabilities) and which backend an experiment runs on (backend.py)
    report/       what people read about a pass: plan, status, diff, progress and summary renderers (pure:
                  values in, text out, no file written)
    records/      what a pass leaves on disk for people: state.json (state_file.py), the workflow logs
                  (workflow_logs.py writes each log; pass_entries.py and unit_entries.py build a pass's
                  entries, pure; log_format.py their shared layout; log_append.py the crash-safe append),
                  and summary.md with its plot (summary.py builds the Summary model from the pass's plan,
                  observation and journal view, never planning again; summary_sources.py reads stdout
                  files and eval samples)
    engine/       the pass and the watch: loop.py (run_pass, watch_pass, watch), planning.py (`reconcile
                  plan` from the memo), memo.py (the remembered plan), annotate.py (script ownership in a
                  plan's reasons; a retry's remedy, chosen once per pass and carried on the plan), polling.py,
                  gcpause.py, backend_record.py
    apply/        acts on a plan: apply.py (journal, submit, adopt), prepare.py (render before submit),
                  cancel.py, artifacts.py (move replaced output aside), crashpoints.py (test hook)
    scaffold/     renders a unit's scripts and configs from the spec; resources, the values a remedy starts from
    plan/         planner.py: pure, observation in, plan out (loads nothing that does I/O); remedies.py: the pure
                  remedy choice on retry (a PlannedUnit carries it to apply)
    observe/      what is on disk (checkpoints, eval logs, stdout) and what the scheduler says
                  (scheduler.py: one batched question); reader.py, the Reader a pass reads every file
                  through, which records each path's stat for the memo
    backends/     one Protocol (base.py: submit, query, cancel, release; Capabilities), local/, slurm/
    spec/         the desired state: load and validate experiment_summary.yaml (or .md), expand it into
                  units, layout, the script fingerprint mark, diff of two specs, unit selection (pure)
    journal.py    the append-only record of intents and job ids, and the experiment lock
    jobs.py       the neutral job vocabulary: SLURM state names, Job, Snapshot, job id order, tag owner
    errors.py fsutil.py timefmt.py   error types with exit codes; atomic writes; SLURM time limits
"""

__version__ = "0.1.0"

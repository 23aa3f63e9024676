"""The front door: each command's work before and around its passes, and the policy in it.

The CLI parses options, calls one function here, renders what it returns and exits; nothing here prints
(a watch reports as it goes, through the view the CLI passes in).

    apply.py     apply and watch: load and check the spec, take the experiment's lock, record the
                 backend, one pass or the watch, summary.md after a converged watch; cancel
    options.py   options become policy: the planner's Policy, the preflight check, the watch's polling
                 and the submit cap (from the backend's Capabilities, never its name)
    backend.py   which backend an experiment runs on: the one it was applied with
    read.py      the commands that read: validate, plan (remembered or planned afresh), status, scaffold
    source.py    a spec to compare, from a path or `git:REV:path`
"""

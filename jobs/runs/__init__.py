"""Workflow runs: a workflow version's steps run as RQ jobs, with the database as truth.

How a run moves (one module per part, no import cycles, no private names across modules):
- `start` creates a run (from a trigger, an event or a handoff) and its first advance.
- `walk` (no I/O) walks a definition against the recorded step rows: what can run now, what
  a container decides, whether the run is done or failed.
- `advance` locks the run row, walks it and records what the walk decided; steps that can run
  are recorded `queued` first, so a step is never queued twice. When nothing is left, the run
  completes (or fails).
- `steps` claims a step with a lease that a heartbeat renews, runs it (`kinds`: the leaf step
  kinds, each with its side effect at the edge) and records the outcome, then advances the run
  in the same transaction.
- `approvals` and `timers`: `approval` and `wait` steps suspend (the step row is `waiting` with
  a `wake_at`, a timer job on RQ's scheduler, no worker held); a decision (first one wins) or
  the timer resumes the run. An effect step past its member's daily cap (`jobs.spend.caps`) is
  held the same way (`waiting`, its `error` says why) and runs again when its timer fires.
- `progress` shows a run's steps in its origin conversation (one message, updated by a
  coalesced job after each committed change; nothing at all for runs nobody follows), and
  `outcomes` tells the requester how the run ended when that is worth it, once.
- `reconcile` repairs what a crash or a Redis loss left behind.
- `queueing` builds and enqueues the RQ jobs; `jobs` holds their entry points.
"""

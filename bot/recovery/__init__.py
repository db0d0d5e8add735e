"""After a cancel that left production down: the offer of Resume or Put back, and the choice.

A run cancelled after "Stop services" and before "Start services" leaves production DOWN. It is
then *offered* two ways out, kept in ``run_recoveries``; one of them is chosen, once (a conditional
UPDATE), and runs as a new run that names the cancelled one in ``runs.continues_run``:

- **Resume** builds the same procedure again from the cancelled run's pinned inputs (target,
  backup with its size and time) and leaves out the steps already done. The exception is a step
  that establishes a safeguard a remaining step needs: a safeguard holds only in the run that
  established it, so the resumed run verifies the backup again and writes a fresh safety backup;
  when the database was already dropped, it verifies the safety backup the cancelled run wrote
  (then the only copy of the old data) instead, and the DROP itself is not repeated.
- **Put back** restores the compose file copy the run kept (``*.rollbot-<epoch>.bak``) when the
  file was switched, starts the services, checks that they run and answer healthy, and says so
  honestly when what ran before is back but unhealthy. It is not offered once the run changed
  the database (a migration rolled back, the database dropped or restored): that would not be
  what ran before.

Both start with a pre-flight that accepts only the state the cancel left: services stopped, and
the compose file naming either the old version or the target. The two procedures themselves are
built in ``bot/procedures/resume.py`` and ``bot/procedures/put_back.py``.
"""

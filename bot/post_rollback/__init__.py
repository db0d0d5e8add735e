"""After the rollback: verification tiers and their schedule, the report, the checklist."""

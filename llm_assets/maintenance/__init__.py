"""Table maintenance: compaction, checkpoints, vacuum and retention of the Delta tables, on schedules."""

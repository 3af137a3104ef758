"""The maintenance domain's definitions (resources are bound by the root definitions)."""

import dagster as dg

from llm_assets.maintenance import jobs

defs = dg.Definitions(jobs=[jobs.delta_maintenance_job, jobs.retention_job],
                      schedules=[jobs.hourly_maintenance, jobs.daily_vacuum, jobs.daily_retention])

"""Analytics: the dbt models over the Delta tables (`dbt_project/`), as Dagster assets."""

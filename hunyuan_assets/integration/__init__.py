"""The Dagster layer: resources, the asset graph and its checks, sensors, schedules and jobs,
built over the Dagster-free client and core below it."""

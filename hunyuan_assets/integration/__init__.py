"""The Dagster layer: resources, the asset graph and its checks, sensors, schedules and jobs,
built over the Dagster-free client and core below it."""

import warnings

import dagster as dg

# Preview/beta Dagster features this layer relies on on purpose: their notices would only tell
# our users what we already chose. Each filter names one category and one feature's message:
# - partitioned asset checks, `AssetCheckSpec(partitions_def=...)` (PreviewWarning in 1.13):
#   per-image check results in a single-run backfill. Only where our modules raise it, so a
#   user's own use of the feature still warns.
# - `BackfillPolicy.single_run()` as an asset's `backfill_policy`: many images in one run
#   (BetaWarning on `@asset` in 1.13; `@multi_asset` does not warn today). Dagster attributes
#   this one to its own decorator module, so it cannot be narrowed to ours.
_RELIED_ON = [
    (
        dg.PreviewWarning,
        "Specifying a partitions_def on an AssetCheckSpec is currently in preview",
        r"hunyuan_assets\.",
    ),
    (dg.BetaWarning, "Parameter `backfill_policy` of function `asset` is currently in beta", ""),
]
for _category, _message, _module in _RELIED_ON:
    warnings.filterwarnings("ignore", _message, _category, module=_module)

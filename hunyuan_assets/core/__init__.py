"""The core, without Dagster: where images come from (`sources`), where meshes, records and
the parquet log live (`store`, `records`, `log`), GLB inspection and previews (`glb`), and the
path from registered images to stored meshes (`registration`, `mesh_generation`)."""

"""Where images come from and where meshes go: a folder or an S3 prefix, as Dagster resources."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from hunyuan_assets.core.log import PredictionLog
from hunyuan_assets.core.sources import SAMPLES_DIR, ImageSource, open_image_source
from hunyuan_assets.core.store import MeshStore, open_mesh_store

# A presigned URL is a credential for the object: short-lived. Images are registered just
# before their submit (mesh_generation.py streams them), so an hour is plenty.
PRESIGN_SECONDS = 3600


def _is_s3(location: str) -> bool:
    return location.startswith("s3://")


class ImagesResource(dg.ConfigurableResource):
    """The images to turn into meshes: one dynamic partition per image file."""

    location: str = Field(
        default=str(SAMPLES_DIR),
        description="A folder path, or s3://bucket/prefix (read through the s3 resource).",
    )
    s3: S3Resource = Field(description="dagster-aws S3 resource, used for s3:// locations.")

    def open(self) -> ImageSource:
        client = self.s3.get_client() if _is_s3(self.location) else None
        return open_image_source(self.location, s3_client=client, url_expiry=PRESIGN_SECONDS)


class MeshStoreResource(dg.ConfigurableResource):
    """The durable mesh store: meshes, previews, prediction records and the parquet log."""

    location: str = Field(
        description="A folder path, or s3://bucket/prefix (written through the s3 resource)."
    )
    s3: S3Resource = Field(description="dagster-aws S3 resource, used for s3:// locations.")

    def open(self) -> MeshStore:
        if not _is_s3(self.location):
            return open_mesh_store(self.location)
        return open_mesh_store(
            self.location, s3_client=self.s3.get_client(), endpoint_url=self.s3.endpoint_url
        )

    def prediction_log(self) -> PredictionLog:
        return PredictionLog(self.open())

"""Hunyuan3DResource: Dagster configuration in, a configured WaveSpeed client out."""

from __future__ import annotations

from urllib.parse import urlparse

import dagster as dg
from pydantic import Field, PrivateAttr

from hunyuan_assets.client import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    AsyncHunyuan3DClient,
    ClientSettings,
    HttpRetryPolicy,
    Hunyuan3DClient,
    PollPolicy,
    Timeouts,
    connections_for,
)

API_KEY_ENV = "WAVESPEED_API_KEY"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Hunyuan3DResource(dg.ConfigurableResource):
    """WaveSpeed AI's hosted Hunyuan3D v2.1 (image -> textured GLB mesh), as a Dagster resource.

    Fill `api_key` with `dg.EnvVar("WAVESPEED_API_KEY")` so the key stays out of code and run
    config. Point `base_url` at the bundled emulator (`python -m hunyuan_assets.emulator`) to
    work offline; any key is accepted there.

    Example:
        ```python
        import dagster as dg
        from hunyuan_assets import Hunyuan3DResource

        @dg.asset
        def chair_mesh(hunyuan3d: Hunyuan3DResource) -> dg.MaterializeResult:
            with hunyuan3d.get_client() as client:
                result = client.generate("https://example.com/chair.png", Path("chair.glb"))
            return dg.MaterializeResult(metadata={"prediction_id": result.prediction.id})

        defs = dg.Definitions(
            assets=[chair_mesh],
            resources={"hunyuan3d": Hunyuan3DResource(api_key=dg.EnvVar("WAVESPEED_API_KEY"))},
        )
        ```
    """

    api_key: str = Field(
        default="",
        description=(
            "WaveSpeed API key. Set it with EnvVar('WAVESPEED_API_KEY'); it is sent as a bearer "
            "token and never logged. May be empty only when base_url points at a loopback emulator."
        ),
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API root. https://api.wavespeed.ai, or the local emulator's URL.",
    )
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Model path under /api/v3/, e.g. wavespeed-ai/hunyuan3d/v2.1.",
    )
    connect_timeout: float = Field(default=10.0, description="Seconds to open a connection.")
    read_timeout: float = Field(default=30.0, description="Seconds to wait for a result GET.")
    submit_timeout: float = Field(
        default=60.0,
        description="Seconds to wait for a submit answer. A timeout here is ambiguous (the task "
        "may exist and be billed), so a submit is never retried after it.",
    )
    upload_timeout: float = Field(default=120.0, description="Seconds for a media upload.")
    download_timeout: float = Field(default=300.0, description="Seconds to stream an output GLB.")
    poll_initial_interval: float = Field(
        default=2.0, description="First wait between result polls (the provider asks for >= 2 s)."
    )
    poll_max_interval: float = Field(
        default=20.0, description="Longest wait between polls once backed off."
    )
    poll_multiplier: float = Field(default=1.5, description="Growth factor of the poll interval.")
    wait_deadline: float = Field(
        default=1800.0,
        description="Seconds to wait for one prediction before giving up. The prediction id is "
        "kept, so a retry resumes it instead of paying again.",
    )
    max_retries: int = Field(
        default=8,
        description="Attempts for idempotent requests (GETs, uploads, downloads) on 429/5xx and "
        "dropped connections. With the backoff they span about a minute, so a blip of the API "
        "or a proxy is ridden out inside the request instead of failing the step.",
    )
    retry_base_delay: float = Field(
        default=0.5, description="First backoff delay in seconds; doubles each attempt, jittered."
    )
    retry_max_delay: float = Field(default=30.0, description="Cap on one backoff delay (seconds).")
    max_concurrency: int = Field(
        default=2,
        description=(
            "Predictions in flight at once per run. WaveSpeed tiers allow 2 (Bronze, no top-up), "
            "300 (Silver), 3000 (Gold) concurrent tasks; past that tasks queue at the provider."
        ),
    )
    max_submits_in_flight: int = Field(
        default=1,
        description=(
            "Submit POSTs awaiting their answer at once per run. 1: every lost submit answer "
            "is resolved against the predictions list on its own, but a run sends at most one "
            "submit per round trip (4 a second at 250 ms: filling 300 slots takes 75 s). More "
            "fills slots that much faster; two answers lost in the same moment are then left "
            "refused for a person to match (never paid twice either way)."
        ),
    )
    max_download_mb: int = Field(default=512, description="Refuse output files larger than this.")

    _settings: ClientSettings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = self.client_settings()

    def client_settings(self) -> ClientSettings:
        """Validated client settings; fails early and clearly when the key is missing."""
        if not self.api_key and not is_loopback(self.base_url):
            raise dg.DagsterInvalidConfigError(
                f"Hunyuan3DResource needs an API key for {self.base_url}: set the environment "
                f"variable {API_KEY_ENV} (the resource reads it through EnvVar('{API_KEY_ENV}')).",
                [],
                None,
            )
        if self.max_concurrency < 1:
            raise dg.DagsterInvalidConfigError("max_concurrency must be at least 1", [], None)
        if self.max_submits_in_flight < 1:
            raise dg.DagsterInvalidConfigError("max_submits_in_flight must be at least 1", [], None)
        return ClientSettings(
            # A placeholder no message contains: the client scrubs the key from API text, and
            # "emulator" made "(injected by the emulator)" read "(injected by the [redacted])".
            api_key=self.api_key or "no-key-for-loopback",
            base_url=self.base_url.rstrip("/"),
            model=self.model,
            timeouts=Timeouts(
                connect=self.connect_timeout,
                read=self.read_timeout,
                submit=self.submit_timeout,
                upload=self.upload_timeout,
                download=self.download_timeout,
            ),
            poll=PollPolicy(
                initial_interval=self.poll_initial_interval,
                max_interval=self.poll_max_interval,
                multiplier=self.poll_multiplier,
                deadline=self.wait_deadline,
            ),
            retry=HttpRetryPolicy(
                max_attempts=self.max_retries,
                base_delay=self.retry_base_delay,
                max_delay=self.retry_max_delay,
            ),
            max_download_bytes=self.max_download_mb * 2**20,
            max_connections=connections_for(self.max_concurrency),
        )

    @property
    def settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = self.client_settings()
        return self._settings

    def get_client(self) -> Hunyuan3DClient:
        """A synchronous client; use it as a context manager."""
        return Hunyuan3DClient(self.settings)

    def get_async_client(self) -> AsyncHunyuan3DClient:
        """An asyncio client for many predictions in flight; use `async with`."""
        return AsyncHunyuan3DClient(self.settings)


def is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOOPBACK_HOSTS

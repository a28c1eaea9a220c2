"""TorchServe's management API, one method per operation the `mnist-kit models` commands offer; failures as KitError
(through the kit's client), with what to change when the server refuses to register models over HTTP."""

import json
from urllib.parse import quote

from mnist_kit.errors import KitError
from mnist_kit.serving import client


class Management:
    def __init__(self, url: str, token: str | None = None):
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str) -> dict | list:
        try:
            body = client.request(f"{self.url}{path}", method=method, token=self.token)
        except client.ClientError as e:
            if e.status == 405 and method in ("POST", "DELETE"):
                raise KitError(
                    "registering and unregistering models over HTTP is off: set "
                    "enable_model_api=true in the server's config.properties to allow it"
                ) from None
            raise
        return json.loads(body)

    def models(self) -> list[dict]:
        return self.call("GET", "/models")["models"]

    def versions(self, name: str) -> list[dict]:
        return self.call("GET", f"/models/{name}/all")

    def scale(self, name: str, workers: int, version: str | None = None) -> str:
        """Exactly `workers` workers for the model (one version, else the default), once they are up."""
        path = f"/models/{name}" + (f"/{version}" if version else "")
        return self.call("PUT", f"{path}?min_worker={workers}&max_worker={workers}&synchronous=true")["status"]

    def set_default(self, name: str, version: str) -> str:
        return self.call("PUT", f"/models/{name}/{version}/set-default")["status"]

    def register(self, archive: str, workers: int = 1) -> str:
        return self.call("POST", f"/models?url={quote(archive)}&initial_workers={workers}&synchronous=true")["status"]

    def unregister(self, name: str, version: str | None = None) -> str:
        return self.call("DELETE", f"/models/{name}" + (f"/{version}" if version else ""))["status"]

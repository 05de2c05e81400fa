"""`spec.storage.azureBlob` and `spec.storage.gcs`: the typed specs, their parsers and their
schema (with the CEL rules), next to each other as in the other api modules. `spec.storage.s3`
stays in api/policy.py; the rule that exactly one backend is set is `ONE_BACKEND` here.
How the operator uses them: backends.py; the design: docs/design-storage-backends.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .common import SpecError, required
from .schema import obj, prop, rule

BACKENDS = ("s3", "azureBlob", "gcs")
DEFAULT_SERVICE_ACCOUNT_KEY = "service-account.json"
AZURE_CREDENTIAL_KEYS = ("connectionStringKey", "accountKeyKey", "sasTokenKey")


@dataclass(frozen=True)
class AzureBlobSpec:
    """`spec.storage.azureBlob`. No credentials Secret means the pod's Azure workload identity."""

    container: str
    prefix: str
    service_url: str | None
    account_name: str | None
    credentials_secret: str | None
    connection_string_key: str | None
    account_key_key: str | None
    sas_token_key: str | None


@dataclass(frozen=True)
class GcsSpec:
    """`spec.storage.gcs`. No credentials Secret means Application Default Credentials (GKE
    Workload Identity)."""

    bucket: str
    prefix: str
    endpoint: str | None
    project: str | None
    credentials_secret: str | None
    service_account_key: str


def chosen_backend(storage: Mapping[str, Any]) -> str:
    """The one backend key set under spec.storage (the CEL rule ONE_BACKEND, checked again)."""
    chosen = [k for k in BACKENDS if storage.get(k)]
    if len(chosen) != 1:
        raise SpecError("spec.storage needs exactly one of s3, azureBlob, gcs")
    return chosen[0]


def parse_azure_blob(raw: Mapping[str, Any]) -> AzureBlobSpec:
    creds = raw.get("credentialsSecretRef") or {}
    keys = [k for k in AZURE_CREDENTIAL_KEYS if creds.get(k)]
    if creds and len(keys) != 1:
        raise SpecError(
            "spec.storage.azureBlob.credentialsSecretRef needs exactly one of connectionStringKey, accountKeyKey, "
            "sasTokenKey"
        )
    service_url = raw.get("serviceURL") or None
    if not service_url and keys != ["connectionStringKey"]:
        raise SpecError("spec.storage.azureBlob.serviceURL is required unless a connection string is used")
    if keys == ["accountKeyKey"] and not raw.get("accountName"):
        raise SpecError("spec.storage.azureBlob.accountName is required with accountKeyKey")
    secret = str(required(creds, "name", "spec.storage.azureBlob.credentialsSecretRef")) if creds else None
    return AzureBlobSpec(
        container=str(required(raw, "container", "spec.storage.azureBlob")),
        prefix=str(raw.get("prefix") or "").strip("/"),
        service_url=service_url,
        account_name=raw.get("accountName") or None,
        credentials_secret=secret,
        connection_string_key=creds.get("connectionStringKey") or None,
        account_key_key=creds.get("accountKeyKey") or None,
        sas_token_key=creds.get("sasTokenKey") or None,
    )


def parse_gcs(raw: Mapping[str, Any]) -> GcsSpec:
    creds = raw.get("credentialsSecretRef") or {}
    return GcsSpec(
        bucket=str(required(raw, "bucket", "spec.storage.gcs")),
        prefix=str(raw.get("prefix") or "").strip("/"),
        endpoint=raw.get("endpoint") or None,
        project=raw.get("project") or None,
        credentials_secret=str(required(creds, "name", "spec.storage.gcs.credentialsSecretRef")) if creds else None,
        service_account_key=str(creds.get("serviceAccountKey") or DEFAULT_SERVICE_ACCOUNT_KEY),
    )


# ---------------------------------------------------------------------------- the schema


def _one_of(fields: tuple[str, ...]) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"


ONE_BACKEND = rule(_one_of(BACKENDS), "spec.storage needs exactly one backend - s3, azureBlob or gcs")


def _prefix(where: str) -> dict[str, Any]:
    return prop(
        "string",
        maxLength=512,
        default="",
        pattern="^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$",
        description=f"Key prefix inside the {where}, without leading or trailing slash.",
    )


def _url(description: str) -> dict[str, Any]:
    return prop("string", maxLength=2048, pattern="^https?://[^\\s/]+(/.*)?$", description=description)


AZURE_BLOB_SCHEMA = obj(
    {
        "container": prop("string", minLength=3, maxLength=63, pattern="^[a-z0-9][a-z0-9-]*[a-z0-9]$"),
        "prefix": _prefix("container"),
        "serviceURL": _url(
            "Blob service URL, e.g. https://<account>.blob.core.windows.net (or an Azurite URL ending in "
            "/<account>). Optional with a connection string, which names the endpoint itself."
        ),
        "accountName": prop("string", maxLength=64, description="Storage account name; required with accountKeyKey."),
        "credentialsSecretRef": obj(
            {
                "name": prop("string", minLength=1, maxLength=253),
                "connectionStringKey": prop("string", minLength=1, description="Key holding a connection string."),
                "accountKeyKey": prop("string", minLength=1, description="Key holding the account key."),
                "sasTokenKey": prop("string", minLength=1, description="Key holding a SAS token (container scope)."),
            },
            required=["name"],
            rules=[
                rule(
                    _one_of(AZURE_CREDENTIAL_KEYS),
                    "credentialsSecretRef needs exactly one of connectionStringKey, accountKeyKey, sasTokenKey",
                )
            ],
        ),
    },
    required=["container"],
    rules=[
        rule(
            "has(self.serviceURL) || "
            "(has(self.credentialsSecretRef) && has(self.credentialsSecretRef.connectionStringKey))",
            "serviceURL is required unless the credentials are a connection string",
        ),
        rule(
            "!has(self.credentialsSecretRef) || !has(self.credentialsSecretRef.accountKeyKey) || has(self.accountName)",
            "accountName is required with accountKeyKey",
        ),
    ],
    description=(
        "Azure Blob Storage. Credentials from a Secret (exactly one of a connection string, an account key or a SAS "
        "token); without credentialsSecretRef the agent uses the pod's Azure workload identity (needs the "
        "azure-identity extra in the image)."
    ),
)
GCS_SCHEMA = obj(
    {
        "bucket": prop("string", minLength=3, maxLength=222, pattern="^[a-z0-9][a-z0-9._-]*[a-z0-9]$"),
        "prefix": _prefix("bucket"),
        "endpoint": _url("JSON API endpoint; leave empty for Google Cloud (set for an emulator)."),
        "project": prop("string", maxLength=64, description="Project ID (optional)."),
        "credentialsSecretRef": obj(
            {
                "name": prop("string", minLength=1, maxLength=253),
                "serviceAccountKey": prop("string", default=DEFAULT_SERVICE_ACCOUNT_KEY),
            },
            required=["name"],
        ),
    },
    required=["bucket"],
    description=(
        "Google Cloud Storage. Credentials are a service-account JSON key from a Secret; without "
        "credentialsSecretRef the agent uses Application Default Credentials (GKE Workload Identity)."
    ),
)

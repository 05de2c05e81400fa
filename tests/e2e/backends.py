"""The Azure Blob (Azurite) and GCS (fake-gcs-server) side of the e2e helpers: credentials in every
mode the operator supports, the policy's `storage` block, and direct SDK access to check what is
stored (deliberately the SDKs, not the operator's own store code under test)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tests.stackenv import Stack

AZURE, GCS = "azureBlob", "gcs"
AZURE_SECRET, GCS_SECRET = "azure-credentials", "gcs-credentials"
# Credential modes, as used in `env` fixture params: "<backend>" or "<backend>:<mode>".
AZURE_MODES = ("connectionString", "accountKey", "sas")
GCS_MODES = ("serviceAccount", "anonymous")


def split(param: str) -> tuple[str, str]:
    backend, _, mode = param.partition(":")
    return backend, mode or {AZURE: "connectionString", GCS: "serviceAccount"}.get(backend, "")


def azure_connection_string(stack: Stack) -> str:
    az = stack.raw["azure"]
    return (
        f"DefaultEndpointsProtocol=http;AccountName={az['account']};AccountKey={az['key']};"
        f"BlobEndpoint={az['endpoint']};"
    )


def azure_container(stack: Stack, name: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azure_connection_string(stack)).get_container_client(name)


def azure_sas(stack: Stack, container: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    az = stack.raw["azure"]
    return str(
        generate_container_sas(
            az["account"],
            container,
            account_key=az["key"],
            permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=6),
        )
    )


def gcs_client(stack: Stack) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.raw["gcs"]["endpoint"]},
    )


def service_account_json() -> str:
    """A service-account key file like the ones Google issues, with a freshly generated RSA key.
    The agent signs its requests with it; fake-gcs-server accepts any bearer token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "local",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": "mysql-backup@local.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def create_bucket(stack: Stack, backend: str, name: str) -> None:
    if backend == AZURE:
        azure_container(stack, name).create_container()
    else:
        gcs_client(stack).create_bucket(name)


def storage_spec(stack: Stack, backend: str, mode: str, bucket: str, secret: Any) -> dict[str, Any]:
    """`spec.storage` for the backend in the given credential mode; `secret(name, data)` creates the
    credentials Secret."""
    if backend == AZURE:
        az = stack.raw["azure"]
        values = {
            "connectionString": azure_connection_string(stack),
            "accountKey": az["key"],
            "sas": azure_sas(stack, bucket),
        }
        secret(AZURE_SECRET, values)
        key = {"connectionString": "connectionStringKey", "accountKey": "accountKeyKey", "sas": "sasTokenKey"}[mode]
        spec: dict[str, Any] = {
            "container": bucket,
            "prefix": "backups",
            "credentialsSecretRef": {"name": AZURE_SECRET, key: mode},
        }
        if mode != "connectionString":
            spec |= {"serviceURL": az["endpoint"], "accountName": az["account"]}
        return {AZURE: spec}
    spec = {"bucket": bucket, "prefix": "backups", "endpoint": stack.raw["gcs"]["endpoint"], "project": "local"}
    if mode == "serviceAccount":
        secret(GCS_SECRET, {"service-account.json": service_account_json()})
        spec["credentialsSecretRef"] = {"name": GCS_SECRET}
    return {GCS: spec}


def objects(stack: Stack, backend: str, bucket: str, prefix: str = "") -> dict[str, int]:
    if backend == AZURE:
        return {b.name: int(b.size) for b in azure_container(stack, bucket).list_blobs(name_starts_with=prefix)}
    return {b.name: int(b.size) for b in gcs_client(stack).list_blobs(bucket, prefix=prefix)}


def read(stack: Stack, backend: str, bucket: str, key: str) -> bytes:
    if backend == AZURE:
        return bytes(azure_container(stack, bucket).get_blob_client(key).download_blob().readall())
    return bytes(gcs_client(stack).bucket(bucket).blob(key).download_as_bytes())


def write(stack: Stack, backend: str, bucket: str, key: str, data: bytes) -> None:
    if backend == AZURE:
        azure_container(stack, bucket).get_blob_client(key).upload_blob(data, overwrite=True)
    else:
        gcs_client(stack).bucket(bucket).blob(key).upload_from_string(data)


def delete(stack: Stack, backend: str, bucket: str, key: str) -> None:
    if backend == AZURE:
        azure_container(stack, bucket).get_blob_client(key).delete_blob()
    else:
        gcs_client(stack).bucket(bucket).blob(key).delete()


def secret_values(env: Any) -> list[str]:
    """The credentials behind env's policy, read back from its Secret: the Azure account key and
    SAS signature, or the PEM lines of the GCS key's private key."""
    import base64

    name = AZURE_SECRET if env.backend == AZURE else GCS_SECRET
    data = {
        k: base64.b64decode(v).decode()
        for k, v in (env.core.read_namespaced_secret(name, env.namespace).data or {}).items()
    }
    if env.backend == AZURE:
        return [data["accountKey"], data["sas"].split("sig=")[1].split("&")[0]]
    key = json.loads(data["service-account.json"])["private_key"]
    return [line for line in key.splitlines() if len(line) > 40]

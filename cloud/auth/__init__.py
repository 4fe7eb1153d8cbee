"""Authentication: user passwords, bearer tokens, API keys, gateway credentials, and the
Mosquitto files that carry gateway credentials to the broker.

- :mod:`cloud.auth.passwords`   scrypt password hashes, Mosquitto ``$7$`` hashes, digests
- :mod:`cloud.auth.principal`   :class:`Principal`, who is calling
- :mod:`cloud.auth.tokens`      password login, JWT bearer tokens, API keys
- :mod:`cloud.auth.gateways`    gateway credentials: issue/rotate, revoke, authenticate
- :mod:`cloud.auth.mosquitto`   ``password_file`` and ``acl_file`` for the broker

Nothing here imports FastAPI; ``cloud.api.deps`` turns request headers into a
:class:`Principal` with these functions.
"""

from cloud.auth.gateways import (
    IssuedCredential,
    authenticate_gateway,
    issue_credential,
    revoke_credential,
)
from cloud.auth.mosquitto import MosquittoFiles, ServiceAccount, mosquitto_files, write_files
from cloud.auth.passwords import hash_password, mosquitto_hash, verify_password
from cloud.auth.principal import Principal
from cloud.auth.tokens import (
    IssuedApiKey,
    IssuedToken,
    authenticate_password,
    create_api_key,
    issue_token,
    principal_from_api_key,
    principal_from_token,
    revoke_api_key,
)

__all__ = [
    "IssuedApiKey",
    "IssuedCredential",
    "IssuedToken",
    "MosquittoFiles",
    "Principal",
    "ServiceAccount",
    "authenticate_gateway",
    "authenticate_password",
    "create_api_key",
    "hash_password",
    "issue_credential",
    "issue_token",
    "mosquitto_files",
    "mosquitto_hash",
    "principal_from_api_key",
    "principal_from_token",
    "revoke_api_key",
    "revoke_credential",
    "verify_password",
    "write_files",
]

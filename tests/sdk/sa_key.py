"""Service-account keys as `yc iam key create --output FILE` writes them: an RSA
2048 key pair with the key's id and its service account's id.

    python sa_key.py FILE KEY_ID SERVICE_ACCOUNT_ID

writes such a key to FILE (the public half goes in opsd's tokens file, the
whole is what `yandexcloud.SDK(service_account_key=...)` takes).
"""

import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def make_key(key_id: str, service_account_id: str) -> dict[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "id": key_id,
        "service_account_id": service_account_id,
        "key_algorithm": "RSA_2048",
        "public_key": public_pem.decode(),
        "private_key": private_pem.decode(),
    }


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: sa_key.py FILE KEY_ID SERVICE_ACCOUNT_ID")
    path, key_id, account_id = sys.argv[1:]
    with open(path, "w", encoding="utf-8") as file:
        json.dump(make_key(key_id, account_id), file, indent=2)
